"""Validate a dataset and compute what the ModelHub records about it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from atm_core.data.loading import Table, read_table
from atm_core.errors import DataError


@dataclass(frozen=True)
class FeatureSchema:
    """Which feature columns are numeric and which are categorical (one-hot encoded)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def to_json(self) -> dict[str, list[str]]:
        return {"numeric": list(self.numeric), "categorical": list(self.categorical)}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> FeatureSchema:
        return cls(tuple(data["numeric"]), tuple(data["categorical"]))

    @classmethod
    def infer(cls, features: pd.DataFrame) -> FeatureSchema:
        numeric, categorical = [], []
        for name in features.columns:
            column = features[name]
            is_number = pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
            (numeric if is_number else categorical).append(str(name))
        return cls(tuple(numeric), tuple(categorical))


@dataclass(frozen=True)
class DatasetInfo:
    """A validated dataset: its locations, metadata (as in the ATM documentation) and schema."""

    name: str
    train_path: str
    test_path: str | None
    class_column: str
    n_examples: int
    k_classes: int
    d_features: int
    majority: float
    size_kb: int
    content_hash: str
    schema: FeatureSchema
    classes: list[Any] = field(default_factory=list)


def inspect_dataset(
    train_path: str, class_column: str = "class", test_path: str | None = None
) -> tuple[DatasetInfo, pd.DataFrame, pd.DataFrame | None]:
    """Read and validate the data; return its metadata and the parsed train (and test) frames."""
    info, train, test = read_dataset(train_path, class_column, test_path)
    return info, train.frame, None if test is None else test.frame


def read_dataset(
    train_path: str, class_column: str = "class", test_path: str | None = None
) -> tuple[DatasetInfo, Table, Table | None]:
    """:func:`inspect_dataset`, with each file's table: its labelled rows, sha256 and size."""
    train = read_table(train_path, class_column)
    train = replace(train, frame=_checked_labels(train, class_column))
    train_frame = train.frame
    test_frame = None
    test_size = 0
    test_hash = ""
    test = None
    if test_path:
        test = read_table(test_path, class_column)
        _check_same_columns(train, test)
        test = replace(test, frame=_checked_labels(test, class_column))
        test_frame = test.frame
        test_size, test_hash = test.size_bytes, test.sha256
    features = train_frame.drop(columns=[class_column])
    if features.shape[1] == 0:
        raise DataError(f"{train_path} has no feature columns besides the label '{class_column}'")
    labels = train_frame[class_column]
    all_labels = labels if test_frame is None else pd.concat([labels, test_frame[class_column]])
    counts = labels.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"label column '{class_column}' of {train_path} has a single class "
            f"({counts.index[0]!r}); classification needs at least two"
        )
    info = DatasetInfo(
        name=_dataset_name(train_path),
        train_path=train_path,
        test_path=test_path,
        class_column=class_column,
        n_examples=len(train_frame) + (0 if test_frame is None else len(test_frame)),
        k_classes=int(all_labels.nunique()),
        d_features=int(features.shape[1]),
        majority=float(all_labels.value_counts().max() / len(all_labels)),
        size_kb=int(math.ceil((train.size_bytes + test_size) / 1024)),
        content_hash=content_hash(train.sha256, test_hash, class_column),
        schema=FeatureSchema.infer(features),
        classes=sorted(_plain(v) for v in all_labels.unique()),
    )
    return info, train, test


def content_hash(train_sha256: str, test_sha256: str | None, class_column: str) -> str:
    """What makes two registrations the same dataset: the bytes of its files and its label."""
    return hashlib.sha256(
        "\n".join([train_sha256, test_sha256 or "", class_column]).encode()
    ).hexdigest()


def _checked_labels(table: Table, class_column: str) -> pd.DataFrame:
    frame = table.frame
    if class_column not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:10])) + (", ..." if frame.shape[1] > 10 else "")
        raise DataError(
            f"label column '{class_column}' not found in {table.location} (columns: {shown})"
        )
    return labelled_rows(frame, class_column, table.location)


def labelled_rows(frame: pd.DataFrame, class_column: str, location: str) -> pd.DataFrame:
    """The rows with a label (``frame`` itself when every row has one: a large table is not
    copied), the labels as :func:`as_classes` makes them."""
    present = frame[class_column].notna()
    if not present.any():
        raise DataError(f"label column '{class_column}' of {location} has no values")
    labelled = frame if present.all() else frame[present].reset_index(drop=True)
    labels = labelled[class_column]
    classes = as_classes(labels)
    return labelled if classes is labels else labelled.assign(**{class_column: classes})


def as_classes(labels: pd.Series) -> pd.Series:
    """Labels as classes: integers, strings and whole numbers as read; fractions (0.5, 2.25)
    as their text, since scikit-learn reads fractional targets as a regression's (``labels``
    itself when nothing changes)."""
    if pd.api.types.is_float_dtype(labels) and not (labels == labels.round()).all():
        return labels.map(lambda value: str(float(value))).astype(object)
    return labels


def _check_same_columns(train: Table, test: Table) -> None:
    train_columns, test_columns = (
        list(map(str, train.frame.columns)),
        list(map(str, test.frame.columns)),
    )
    if set(train_columns) == set(test_columns):
        return
    missing = [c for c in train_columns if c not in test_columns]
    extra = [c for c in test_columns if c not in train_columns]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected {', '.join(extra)}")
    raise DataError(
        f"test file {test.location} has different columns from {train.location}: {'; '.join(parts)}"
    )


def _dataset_name(path: str) -> str:
    name = PurePosixPath(path.split("?")[0].rstrip("/")).name
    for suffix in (".gz", ".csv", ".parquet", ".pq"):
        name = name.removesuffix(suffix)
    return name or "dataset"


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so class labels serialise as JSON."""
    return value.item() if hasattr(value, "item") else value
