"""One seeded, stratified train/test split per datarun, identical in every worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atm_core.data.dataset import FeatureSchema, as_classes, content_hash, labelled_rows
from atm_core.data.loading import Table, file_fingerprint, read_table
from atm_core.data.parsed_cache import ParsedPart, ParsedUnreadable, open_parsed, save_parsed
from atm_core.data.stratified import label_codes, stratified_rows
from atm_core.errors import DataError

if TYPE_CHECKING:
    from atm_core.artifacts import ArtifactStore

log = logging.getLogger(__name__)

MAX_FOLDS = 5
HOLDOUT = 0  # no cross-validation: one fit, judged on a holdout from the training part
# Cheaper judgment on large data: (training rows up to, folds); beyond the last, a holdout.
# On 52,500 training rows one histogram gradient boosting fit takes ~4 s on one thread: 5-fold
# CV plus the refit (6 fits) cost 25 s of a 60 s budget, the holdout one fit.
FOLDS_BY_SIZE = ((10_000, MAX_FOLDS), (30_000, 3))
# A timed datarun (walltime budget or deadline) holds out above 10,000 rows: at 60 s on diamonds
# and cces_vote (28,000 training rows) it evaluated 2.1-2.4x more configurations than with 3
# folds, at the same test AUC (benchmarks/RESULTS.md, "A holdout under a time budget").
TIMED_FOLDS_BY_SIZE = ((10_000, MAX_FOLDS),)
HOLDOUT_SHARE = 0.2  # of the training part, under a holdout: judges each classifier


def folds_for(n_train: int, requested: int | None = None, timed: bool = False) -> int:
    """CV folds for a training part of ``n_train`` rows (0: holdout) of a datarun with a time
    budget (``timed``) or without; ``requested`` wins."""
    if requested is not None:
        return requested
    for rows, folds in TIMED_FOLDS_BY_SIZE if timed else FOLDS_BY_SIZE:
        if n_train <= rows:
            return folds
    return HOLDOUT


@dataclass
class TrainTest:
    """A datarun's split. Under a holdout (``n_folds`` 0) the training part's first ``n_fit``
    rows are fitted and the rest judge the fit: laid out so once per worker, a fit takes a slice
    of the cached rows instead of copying them (6 MB of 52,500 rows on the 100k benchmark set).
    """

    X_train: pd.DataFrame
    y_train: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    n_folds: int
    n_fit: int = 0

    @property
    def classes(self) -> list:
        return sorted(pd.concat([self.y_train, self.y_test]).unique().tolist())


@dataclass(frozen=True)
class RowSplit:
    """Where a datarun's parts come from: positions of the training part's rows in the training
    file (laid out fit rows first under a holdout) and of the test part's (None: the test file
    is the test part)."""

    train: np.ndarray
    test: np.ndarray | None
    n_folds: int
    n_fit: int = 0


def split_rows(
    labels: pd.Series,
    test_labels: pd.Series | None,
    seed: int,
    test_size: float,
    cv_folds: int | None = None,
) -> RowSplit:
    """Split by the labels alone (stratified, seeded): the rows of each part."""
    codes = label_codes(labels)
    train_rows: np.ndarray = np.arange(len(labels))
    test_rows = None
    if test_labels is None:
        counts = labels.value_counts()
        if counts.min() < 2:
            raise DataError(
                f"class {counts.idxmin()!r} has a single example; every class needs at least 2 "
                "to be split into train and test"
            )
        try:
            train_rows, test_rows = stratified_rows(codes, test_size=test_size, seed=seed)
        except ValueError as exc:
            raise DataError(f"cannot split {len(labels)} rows into train and test: {exc}") from None
    train_codes = codes[train_rows]
    counts = np.bincount(train_codes)
    smallest = int(counts[counts > 0].min())
    n_folds = min(folds_for(len(train_rows), cv_folds), smallest)
    if smallest < 2:  # neither folds nor a stratified holdout can be made
        raise DataError(
            "too few examples for cross-validation: the training part has a class with a single "
            "example; use a larger dataset or a separate test file"
        )
    n_fit = 0
    if n_folds == HOLDOUT:
        try:
            fit_rows, judge_rows = stratified_rows(train_codes, test_size=HOLDOUT_SHARE, seed=seed)
        except ValueError as exc:
            raise DataError(f"cannot hold out a share of {len(train_rows)} rows: {exc}") from None
        train_rows, n_fit = train_rows[np.concatenate([fit_rows, judge_rows])], len(fit_rows)
    return RowSplit(train_rows, test_rows, n_folds, n_fit)


def split_frames(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    class_column: str,
    schema: FeatureSchema,
    seed: int,
    test_size: float,
    cv_folds: int | None = None,
    *,
    consume: bool = False,
) -> TrainTest:
    """Split (or take the given test file), keeping the schema's feature columns in order.

    ``consume``: the caller gives ``train`` and ``test`` up; their columns are removed as they
    are split, so the split needs memory for one column more than the data, not for a second
    copy. (They may be any source of columns with ``[name]``, ``pop(name)`` and ``len``.)
    """
    rows = split_rows(
        train[class_column],
        None if test is None else test[class_column],
        seed,
        test_size,
        cv_folds,
    )
    features = list(schema.columns)
    if rows.test is None:
        assert test is not None
        (X_train,), (y_train,) = _rows_of(train, [rows.train], features, class_column, consume)
        (X_test,), (y_test,) = _rows_of(test, [slice(None)], features, class_column, consume)
    else:
        parts = [rows.train, rows.test]
        (X_train, X_test), (y_train, y_test) = _rows_of(
            train, parts, features, class_column, consume
        )
    return TrainTest(X_train, y_train, X_test, y_test, rows.n_folds, rows.n_fit)


def _rows_of(
    source: Any,
    parts: list[np.ndarray | slice],
    features: list[str],
    class_column: str,
    consume: bool,
) -> tuple[list[pd.DataFrame], list[pd.Series]]:
    """``source``'s ``features`` and labels at each of ``parts``' row positions, column by
    column (each removed from ``source`` once taken when ``consume``)."""
    taken: list[dict[str, pd.Series]] = [{} for _ in parts]
    for name in [*features, class_column]:
        column = source.pop(name) if consume else source[name]
        for part, rows in zip(taken, parts, strict=True):
            part[name] = column.iloc[rows].reset_index(drop=True)
        del column
    labels = [part.pop(class_column) for part in taken]
    return [pd.DataFrame(part, copy=False) for part in taken], labels


def read_registered(
    train_path: str,
    test_path: str | None,
    class_column: str,
    expected_hash: str,
    store: ArtifactStore | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Re-read a registered dataset's labelled rows, refusing files changed since then.

    With ``store`` (the artifact store), the parsed copy kept there is read instead of the
    files when it holds the registered content, and written when it does not (see
    :mod:`atm_core.data.parsed_cache`, also for what a changed file means then).
    """
    tables = None
    parts = _open_parsed(store, expected_hash, train_path, test_path, class_column)
    if parts is not None:
        try:
            tables = (
                parts[0].table(train_path),
                parts[1].table(test_path) if parts[1] and test_path else None,
            )
        except ParsedUnreadable as exc:
            log.warning("ignoring the parsed rows at %s", exc)
        finally:
            _close(parts)
    if tables is None:
        tables = _read_files(train_path, test_path, class_column, expected_hash, store)
    return _labelled(tables, class_column)


def _labelled(
    tables: tuple[Table, Table | None], class_column: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    train, test = tables
    train_rows = labelled_rows(train.frame, class_column, train.location)
    if test is None:
        return train_rows, None
    return train_rows, labelled_rows(test.frame, class_column, test.location)


def _read_files(
    train_path: str,
    test_path: str | None,
    class_column: str,
    expected_hash: str,
    store: ArtifactStore | None,
) -> tuple[Table, Table | None]:
    """The dataset's files, refused when changed; their parsed copy written to ``store``
    (there was none, or none this process could use)."""
    train = read_table(train_path, class_column)
    test = read_table(test_path, class_column) if test_path else None
    if content_hash(train.sha256, test.sha256 if test else None, class_column) != expected_hash:
        raise DataError(
            f"{train_path}{' or ' + test_path if test_path else ''} changed since the "
            "dataset was registered; register it again as a new dataset"
        )
    if store is not None:
        save_parsed(store, expected_hash, "train", train)
        if test is not None:
            save_parsed(store, expected_hash, "test", test)
    return train, test


def _open_parsed(
    store: ArtifactStore | None,
    expected_hash: str,
    train_path: str,
    test_path: str | None,
    class_column: str,
) -> tuple[ParsedPart, ParsedPart | None] | None:
    """The dataset's parsed copy when the store holds all of it, of this content, and the
    files still have the fingerprints they had when it was parsed; a missing file raises
    ``DataError`` as reading it would. None without a ``store``."""
    if store is None:
        return None
    train = open_parsed(store, expected_hash, "train")
    test = open_parsed(store, expected_hash, "test") if test_path and train else None
    parts = (train, test)
    try:
        usable = _usable(parts, expected_hash, train_path, test_path, class_column)
    except BaseException:
        _close(parts)
        raise
    if not usable:
        _close(parts)
        return None
    assert train is not None
    return train, test


def _usable(
    parts: tuple[ParsedPart | None, ParsedPart | None],
    expected_hash: str,
    train_path: str,
    test_path: str | None,
    class_column: str,
) -> bool:
    train, test = parts
    if train is None or (test_path and test is None):
        return False
    if content_hash(train.sha256, test.sha256 if test else None, class_column) != expected_hash:
        log.warning("ignoring the parsed rows at %s: not the registered content", train.url)
        return False
    for part, location in ((train, train_path), (test, test_path)):
        if part is not None and location and part.fingerprint != file_fingerprint(location):
            log.info("%s changed (size or time) since it was parsed: reading it", location)
            return False
    return True


def _close(parts: tuple[ParsedPart | None, ...]) -> None:
    for part in parts:
        if part is not None:
            part.close()


class _LabelledColumns:
    """A parsed part's labelled rows, a column read each time one is asked for: given to
    :func:`split_frames` to consume, the whole frame never exists next to its split."""

    def __init__(self, part: ParsedPart, class_column: str) -> None:
        self._part = part
        self._class_column = class_column
        labels = part.column(class_column)
        present = labels.notna().to_numpy()
        self._rows = None if present.all() else np.flatnonzero(present)
        self._labels = as_classes(self._labelled(labels))

    def _labelled(self, column: pd.Series) -> pd.Series:
        return column if self._rows is None else column.iloc[self._rows].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, name: str) -> pd.Series:
        if name == self._class_column:
            return self._labels
        return self._labelled(self._part.column(name))

    pop = __getitem__


def load_train_test(
    train_path: str,
    test_path: str | None,
    class_column: str,
    schema: FeatureSchema,
    expected_hash: str,
    seed: int,
    test_size: float,
    cv_folds: int | None = None,
    store: ArtifactStore | None = None,
) -> TrainTest:
    """Re-read a registered dataset and split it as its dataruns do.

    With ``store``, from the parsed copy kept there (see :func:`read_registered`), read a
    column at a time: the split is made from the labels, then each column is read and split
    in turn, so the whole frame never exists next to its parts.
    """
    parts = _open_parsed(store, expected_hash, train_path, test_path, class_column)
    if parts is not None:
        try:
            train = _LabelledColumns(parts[0], class_column)
            test = _LabelledColumns(parts[1], class_column) if parts[1] else None
            return split_frames(
                train, test, class_column, schema, seed, test_size, cv_folds, consume=True
            )
        except ParsedUnreadable as exc:
            log.warning("ignoring the parsed rows at %s", exc)
        finally:
            _close(parts)
    tables = _read_files(train_path, test_path, class_column, expected_hash, store)
    train, test = _labelled(tables, class_column)
    del tables
    return split_frames(train, test, class_column, schema, seed, test_size, cv_folds, consume=True)


def load_all_rows(
    train_path: str,
    test_path: str | None,
    class_column: str,
    schema: FeatureSchema,
    expected_hash: str,
    store: ArtifactStore | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Every labelled row of a registered dataset (train and test part): for a final refit."""
    train, test = read_registered(train_path, test_path, class_column, expected_hash, store)
    rows = train if test is None else concat_rows(train, test)
    return rows[list(schema.columns)].reset_index(drop=True), rows[class_column].reset_index(
        drop=True
    )


def concat_rows(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """``first``'s rows then ``second``'s; a text column stays categorical (``pd.concat`` of
    two categoricals with other categories would make a Python string per row)."""
    second = second[list(first.columns)]
    for name in first.columns:
        left, right = first[name], second[name]
        if isinstance(left.dtype, pd.CategoricalDtype) and isinstance(
            right.dtype, pd.CategoricalDtype
        ):
            union = left.cat.categories.union(right.cat.categories, sort=False)
            first = first.assign(**{name: left.cat.set_categories(union)})
            second = second.assign(**{name: right.cat.set_categories(union)})
    return pd.concat([first, second], ignore_index=True)
