"""Large data files (issue 18, item 7): a CSV is read with pyarrow's streaming reader into
small pandas types, hashed on the way, and kept parsed in the artifact store, where workers
read it instead of the CSV.

The CSV here (80,000 rows, 4.8 MB) spans more than one of the reader's 4 MB blocks: types that
change after the first block are tested. Speed and memory are measured by
``benchmarks/large_csv.py`` and reported in ``benchmarks/RESULTS.md``, never asserted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv
import pytest
from rich.console import Console
from scipy.stats import rankdata
from sklearn.model_selection import train_test_split

from atm_core import evaluation
from atm_core.artifacts import ArtifactStore
from atm_core.console import ReadingProgress
from atm_core.data.dataset import FeatureSchema, read_dataset
from atm_core.data.loading import compact, file_fingerprint, read_table, reporting_reads
from atm_core.data.parsed_cache import open_parsed, parsed_key, save_parsed
from atm_core.data.split import load_all_rows, load_train_test
from atm_core.data.stratified import label_codes, stratified_rows
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.estimators import as_categories
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import ClassifierStatus
from atm_core.pipeline import build_pipeline
from atm_core.training import DataCache

ROWS = 80_000
LATE = ROWS - 500  # rows in the file's last block: past the first 4 MB the types come from
COLOURS = [" red", "blue ", " a ", "green"]
LABELS = ["yes", "no", " maybe "]
ATM_BIN = Path(sys.executable).parent / "atm"


def _columns() -> dict[str, list[str]]:
    """Each column's cells, as written in the file."""
    rng = np.random.default_rng(7)
    numbers = rng.normal(size=ROWS)
    columns: dict[str, list[str]] = {name: [] for name in EXPECTED_TYPES}
    for i in range(ROWS):
        late = i >= LATE
        cells = {
            "num": "" if i % 50 == 0 else "NA" if i % 51 == 0 else f"{numbers[i]:.5f}",
            "count": str(i % 100),
            "big": str(3_000_000_000 + i),
            "whole": "" if i % 7 == 0 else str(i % 1000),
            "colour": "" if i % 13 == 0 else COLOURS[i % 4],
            "late_text": "unknown" if late and i % 2 else f"{i % 10:03d}",
            "late_float": "2.5" if late else str(i % 5),
            "late_number": str(i) if late else "",
            "flag": "" if i % 9 == 0 else "True" if i % 2 else "False",
            "when": f"2024-01-{i % 28 + 1:02d}",
            "empty": "",
            "label": "" if i % 97 == 0 else LABELS[i % 3],
        }
        for name, cell in cells.items():
            columns[name].append(cell)
    return columns


EXPECTED_TYPES = {
    "num": "float64",
    "count": "int8",
    "big": "int64",
    "whole": "float32",  # integers with gaps: float, and every one exact in float32
    "colour": "category",
    "late_text": "category",
    "late_float": "float32",  # 0..4 and 2.5: exact in float32
    "late_number": "float32",
    "flag": "object",  # booleans with gaps, as pandas reads them
    "when": "category",  # dates stay text
    "empty": "float32",
    "label": "str",  # the label column: plain strings, not categories
}


@pytest.fixture(scope="module")
def written() -> dict[str, list[str]]:
    return _columns()


@pytest.fixture(scope="module")
def large_csv(tmp_path_factory: pytest.TempPathFactory, written: dict[str, list[str]]) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.csv"
    lines = [",".join(written)]
    lines += [",".join(row) for row in zip(*written.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    before_late = sum(len(line) + 1 for line in lines[: LATE + 1])
    assert before_late > 4 * 1024 * 1024  # the late rows are past the reader's first block
    return path


@pytest.fixture
def data_file(large_csv: Path, tmp_path: Path) -> Path:
    """A copy of the large CSV this test may change."""
    return Path(shutil.copy(large_csv, tmp_path / "data.csv"))


def _text(column: pd.Series) -> list[str | None]:
    return [None if pd.isna(value) else value for value in column.astype(object)]


# -- reading --------------------------------------------------------------------------------
def test_a_large_csv_reads_in_pandas_types_with_its_text_as_written(
    large_csv: Path, written: dict[str, list[str]]
) -> None:
    table = read_table(str(large_csv), "label")
    frame = table.frame
    assert table.sha256 == hashlib.sha256(large_csv.read_bytes()).hexdigest()
    assert table.size_bytes == large_csv.stat().st_size
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == EXPECTED_TYPES
    for name in ("colour", "late_text", "when", "label"):  # exact: " a ", "007", " maybe "
        assert _text(frame[name]) == [cell or None for cell in written[name]], name
    assert frame["late_text"].iloc[7] == "007" and frame["label"].iloc[2] == " maybe "
    for name in ("num", "whole", "late_float", "late_number", "empty", "count", "big"):
        cells = written[name]
        expected = [np.nan if cell in ("", "NA") else float(cell) for cell in cells]
        np.testing.assert_array_equal(frame[name].to_numpy(np.float64), expected, name)
    assert frame["flag"].tolist()[:3] == [None, True, False]
    schema = FeatureSchema.infer(frame.drop(columns=["label"]))
    assert schema.numeric == (
        "num", "count", "big", "whole", "late_float", "late_number", "empty",
    )  # fmt: skip
    assert schema.categorical == ("colour", "late_text", "flag", "when")


def test_values_match_what_pandas_reads(large_csv: Path) -> None:
    """pandas (without skipinitialspace) reads the same values, in larger types; it reads
    the column that turns to text late as a mix of numbers and text (not as written)."""
    ours = read_table(str(large_csv), "label").frame
    theirs = pd.read_csv(large_csv, dtype={"late_text": str})
    assert list(ours.columns) == list(theirs.columns)
    for name in theirs.columns:
        if pd.api.types.is_numeric_dtype(theirs[name]):
            np.testing.assert_array_equal(ours[name].to_numpy(np.float64), theirs[name], name)
        else:
            assert _text(ours[name]) == _text(theirs[name]), name


def test_names_short_rows_and_blank_lines_are_read_as_pandas_reads_them(tmp_path: Path) -> None:
    """Repeated and empty header names as pandas names them; a row with fewer fields (which
    pyarrow refuses) is read by pandas, its missing cells empty."""
    (tmp_path / "names.csv").write_text("a,a,,class\n1,2,3,x\n\n4,5,6,y\n")
    frame = read_table(str(tmp_path / "names.csv"), "class").frame
    assert list(frame.columns) == ["a", "a.1", "Unnamed: 2", "class"]
    (tmp_path / "short.csv").write_text("a,b,class\n1,2\n3,4,x\n")
    frame = read_table(str(tmp_path / "short.csv"), "class").frame
    assert frame["class"].isna().tolist() == [True, False] and frame["b"].tolist() == [2, 4]


def test_number_columns_take_the_smallest_exact_type() -> None:
    frame = pd.DataFrame(
        {
            "small": [1, -100, 100],
            "medium": [1, 30_000, -2],
            "large": [1, 2**31 - 1, 0],
            "huge": [1, 2**40, 0],
            "integral": [1.0, np.nan, 16_777_216.0],  # 2**24: exact in float32
            "fraction": [0.1, 0.5, np.nan],  # 0.1 is not
            "label": [1, 2, 3],
        }
    )
    compact(frame, keep="label")
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == {
        "small": "int8",
        "medium": "int16",
        "large": "int32",
        "huge": "int64",
        "integral": "float32",
        "fraction": "float64",
        "label": "int64",
    }


def test_category_columns_feed_the_pipelines_as_the_text_they_hold() -> None:
    """One-hot and ordinal encoding (missing values included) answer the same for a frame of
    categories as for the same frame of strings."""
    rng = np.random.default_rng(3)
    text = pd.DataFrame(
        {
            "colour": pd.array(rng.choice([" red", "blue", "a b", None], 300), dtype="str"),
            "size": pd.array(rng.choice(["S", "M", None], 300), dtype="str"),
            "x": rng.normal(size=300),
        }
    )
    categories = text.astype({"colour": "category", "size": "category"})
    y = rng.choice(["p", "q"], 300)
    np.testing.assert_array_equal(
        as_categories(categories[["colour", "size"]]), as_categories(text[["colour", "size"]])
    )
    schema = FeatureSchema.infer(categories)
    assert schema.categorical == ("colour", "size")
    for estimator, values in (
        ("sklearn.linear_model.LogisticRegression", {}),
        ("sklearn.ensemble.HistGradientBoostingClassifier", {"_ordinal": True}),
    ):
        on_text = build_pipeline(estimator, values, schema, random_state=0).fit(text, y)
        on_categories = build_pipeline(estimator, values, schema, random_state=0)
        on_categories.fit(categories, y)
        np.testing.assert_array_equal(
            on_text.predict_proba(text), on_categories.predict_proba(categories)
        )


def test_reading_a_large_file_shows_progress_on_the_console_it_is_given(
    large_csv: Path,
) -> None:
    """Files from the threshold up (50 MB by default) show a bar; smaller ones nothing."""
    for threshold, shown in ((1024, True), (50 * 1024 * 1024, False)):
        output = io.StringIO()
        with (
            ReadingProgress(Console(file=output, width=120), threshold) as progress,
            reporting_reads(progress),
        ):
            read_table(str(large_csv))
        assert ("reading" in output.getvalue() and "large.csv" in output.getvalue()) == shown


# -- the split ------------------------------------------------------------------------------
def test_stratified_rows_are_the_rows_train_test_split_picks() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        n, k = int(rng.integers(8, 2000)), int(rng.integers(2, 7))
        labels = np.array([f"c{v}" for v in rng.choice(k, n, p=rng.dirichlet(np.ones(k)))])
        seed = int(rng.integers(0, 1000))
        size = [  # fractions and counts of either part (restated from scikit-learn: tested)
            {"test_size": 0.3},
            {"train_size": n // 3},
            {"train_size": 0.55, "test_size": 0.2},
            {"test_size": int(rng.integers(1, 40))},
        ][int(rng.integers(0, 4))]
        try:
            expected = train_test_split(np.arange(n), random_state=seed, stratify=labels, **size)
        except ValueError:
            with pytest.raises(ValueError):
                stratified_rows(label_codes(labels), seed=seed, **size)
            continue
        got = stratified_rows(label_codes(labels), seed=seed, **size)
        for want, have in zip(expected, got, strict=True):
            np.testing.assert_array_equal(want, have)


def test_all_rows_of_a_train_and_test_file_keep_their_categories(tmp_path: Path) -> None:
    """The final refit's rows: the test file's categories joined to the training file's."""
    (tmp_path / "train.csv").write_text("c,class\nx,0\ny,1\nx,0\ny,1\n")
    (tmp_path / "test.csv").write_text("c,class\nz,0\nx,1\n")
    info, _, _ = read_dataset(str(tmp_path / "train.csv"), "class", str(tmp_path / "test.csv"))
    X, y = load_all_rows(
        str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), "class", info.schema,
        info.content_hash,
    )  # fmt: skip
    assert str(X["c"].dtype) == "category" and X["c"].tolist() == ["x", "y", "x", "y", "z", "x"]
    assert y.tolist() == [0, 1, 0, 1, 0, 1]


# -- evaluation on large parts --------------------------------------------------------------
def test_metrics_compare_labels_by_their_positions_as_by_the_labels() -> None:
    rng = np.random.default_rng(5)
    for classes in (["no", "yes"], ["a", "b c", "d"], [0, 1, 2, 3]):
        text = isinstance(classes[0], str)  # labels as read (str) and as predicted (object)
        truth = pd.Series(rng.choice(np.array(classes), 500), dtype="str" if text else None)
        predicted = rng.choice(np.array(classes, dtype=object if text else None), 500)
        scores = rng.dirichlet(np.ones(len(classes)), 500)
        by_position = evaluation.compute_metrics(truth, predicted, scores, classes)
        names = evaluation.BINARY_METRICS if len(classes) == 2 else evaluation.MULTICLASS_METRICS
        by_label = {
            name: evaluation.metric_value(
                name, np.asarray(truth), np.asarray(predicted), scores, classes
            )
            for name in names
        }
        assert by_position == pytest.approx(by_label, rel=1e-12), classes


def test_auc_by_counting_is_the_auc_by_ranks() -> None:
    """The same value to the last bit as the rank formula, with ties and infinite scores."""
    rng = np.random.default_rng(9)
    for trial in range(300):
        n = int(rng.integers(2, 2000))
        truth = rng.random(n) < rng.uniform(0.05, 0.95)
        scores = rng.normal(size=n).round(1 if trial % 2 else 6)
        scores[rng.random(n) < 0.05] = -np.inf if trial % 3 else np.inf
        positives, negatives = int(truth.sum()), int((~truth).sum())
        if not positives or not negatives:
            continue
        ranks = rankdata(scores)
        by_ranks = (ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives)
        assert evaluation._auc(truth, scores) == by_ranks


def test_answers_in_blocks_are_the_answers_at_once(
    iris_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = pd.read_csv(iris_path)
    X, y = frame.drop(columns=["class"]), frame["class"]
    schema = FeatureSchema.infer(X)
    for estimator in (
        "sklearn.tree.DecisionTreeClassifier",
        "sklearn.linear_model.LogisticRegression",
        "sklearn.svm.SVC",  # calibrated: a decision function made probabilities
        "sklearn.neighbors.KNeighborsClassifier",
    ):
        model = build_pipeline(estimator, {}, schema, random_state=0).fit(X, y)
        whole = evaluation._predict(model, X)
        monkeypatch.setattr(evaluation, "PREDICT_ROWS", 7)
        blocks = evaluation._predict(model, X)
        monkeypatch.undo()
        np.testing.assert_array_equal(whole[0], blocks[0])
        np.testing.assert_allclose(whole[1], blocks[1], rtol=0, atol=1e-12)


# -- the parsed copy ------------------------------------------------------------------------
def _enter(hub: ModelHub, path: Path, label: str = "label") -> tuple:
    entered = enter_data(
        hub, DatarunRequest(str(path), class_column=label, methods=["dt"], budget=2)
    )
    return hub.get_dataset(entered.dataset_id), entered.dataruns[0]


def _from_csv(dataset, datarun):
    """The datarun's split read from its CSV (no store)."""
    return load_train_test(
        dataset.train_path, dataset.test_path, dataset.class_column,
        FeatureSchema.from_json(dataset.feature_schema), dataset.content_hash,
        datarun.seed, datarun.test_size, datarun.cv_folds,
    )  # fmt: skip


def _assert_same_split(one, other) -> None:
    pd.testing.assert_frame_equal(one.X_train, other.X_train)
    pd.testing.assert_frame_equal(one.X_test, other.X_test)
    pd.testing.assert_series_equal(one.y_train, other.y_train)
    pd.testing.assert_series_equal(one.y_test, other.y_test)
    assert (one.n_folds, one.n_fit) == (other.n_folds, other.n_fit)


def _no_csv_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CSV was parsed")

    monkeypatch.setattr(pyarrow.csv, "open_csv", refuse)
    monkeypatch.setattr(pd, "read_csv", refuse)


def test_enter_data_keeps_the_parsed_rows_and_workers_train_on_them(
    sqlite_hub: ModelHub, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset, datarun = _enter(sqlite_hub, data_file)
    assert sqlite_hub.store.exists(parsed_key(dataset.content_hash, "train"))
    expected = _from_csv(dataset, datarun)
    _no_csv_parsing(monkeypatch)
    data = DataCache().get(dataset, datarun, datarun.top_rung, sqlite_hub.store)
    _assert_same_split(data, expected)
    assert datarun.top_rung > 0  # rungs: the subsamples come from the same rows
    Driver(sqlite_hub).run()
    classifiers = sqlite_hub.classifiers(datarun.id)
    assert [c.status for c in classifiers] == [ClassifierStatus.COMPLETE] * 2


def test_fractional_labels_are_the_same_classes_from_the_parsed_copy(
    sqlite_hub: ModelHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fractions as labels are their text (scikit-learn would see a regression target),
    whether a worker reads the parsed copy or the CSV."""
    rows = [f"{i % 7},{i % 3 / 2}" for i in range(300)]
    (tmp_path / "halves.csv").write_text("x,label\n" + "\n".join(rows) + "\n")
    dataset, datarun = _enter(sqlite_hub, tmp_path / "halves.csv")
    expected = _from_csv(dataset, datarun)
    assert sorted(expected.y_train.unique()) == ["0.0", "0.5", "1.0"]
    _no_csv_parsing(monkeypatch)
    data = DataCache().get(dataset, datarun, datarun.top_rung, sqlite_hub.store)
    assert data.y_train.tolist() == expected.y_train.tolist()
    assert data.y_test.tolist() == expected.y_test.tolist()


@pytest.mark.parametrize("damage", ["flipped bytes", "truncated", "other content"])
def test_a_damaged_parsed_copy_is_set_aside_and_written_again(
    sqlite_hub: ModelHub,
    data_file: Path,
    iris_path: str,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dataset, datarun = _enter(sqlite_hub, data_file)
    copy = Path(sqlite_hub.store.url(parsed_key(dataset.content_hash, "train")))
    data = bytearray(copy.read_bytes())
    if damage == "flipped bytes":  # inside a column's pages: their checksum fails
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
        copy.write_bytes(bytes(data))
    elif damage == "truncated":
        copy.write_bytes(bytes(data[: len(data) // 3]))
    else:  # the parsed rows of another dataset put in its place
        iris = Path(shutil.copy(iris_path, data_file.parent / "iris.csv"))
        other, _ = _enter(sqlite_hub, iris, "class")
        shutil.copy(sqlite_hub.store.url(parsed_key(other.content_hash, "train")), copy)
    with caplog.at_level(logging.WARNING):
        data_read = DataCache().get(dataset, datarun, datarun.top_rung, sqlite_hub.store)
    assert "ignoring the parsed rows" in caplog.text
    _assert_same_split(data_read, _from_csv(dataset, datarun))
    part = open_parsed(sqlite_hub.store, dataset.content_hash, "train")  # written again
    assert part is not None
    try:
        table = part.table(str(data_file))
    finally:
        part.close()
    pd.testing.assert_frame_equal(table.frame, read_table(str(data_file), "label").frame)


def test_a_touched_file_is_read_again_and_a_changed_one_refused(
    sqlite_hub: ModelHub, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is used while the file keeps its size and time; a file only touched (same
    bytes) is read, its hash checked and the copy's fingerprint renewed."""
    dataset, datarun = _enter(sqlite_hub, data_file)
    stat = data_file.stat()
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    DataCache().get(dataset, datarun, datarun.top_rung, sqlite_hub.store)
    part = open_parsed(sqlite_hub.store, dataset.content_hash, "train")
    assert part is not None and part.fingerprint == file_fingerprint(str(data_file))
    part.close()
    _no_csv_parsing(monkeypatch)  # renewed: the next worker reads the copy
    DataCache().get(dataset, datarun, datarun.top_rung, sqlite_hub.store)
    monkeypatch.undo()
    with data_file.open("a") as handle:
        handle.write("1,2,3,4,x,000,1,,True,2024-01-01,,yes\n")
    with pytest.raises(Exception, match="changed since the dataset was registered"):
        DataCache().get(dataset, datarun, datarun.top_rung, sqlite_hub.store)


def test_the_parsed_copy_on_s3(s3_root: str, large_csv: Path) -> None:
    store = ArtifactStore(s3_root)
    table = read_table(str(large_csv), "label")
    content = "0" * 64
    assert save_parsed(store, content, "train", table)
    part = open_parsed(store, content, "train")
    assert part is not None
    try:
        assert (part.sha256, part.size_bytes) == (table.sha256, table.size_bytes)
        pd.testing.assert_frame_equal(part.table(str(large_csv)).frame, table.frame)
    finally:
        part.close()
    assert open_parsed(store, "1" * 64, "train") is None


def test_atm_commands_on_a_large_csv_workers_never_parse_it(
    data_file: Path, tmp_path: Path
) -> None:
    """The real ``atm`` executable: ``enter_data`` (nothing on stderr), then the CSV's bytes
    are replaced by binary ones of the same size under the same modification time (what a
    worker cannot parse, and the one change the copy does not notice): ``atm worker`` still
    trains both classifiers, on the parsed copy."""
    env = dict(
        os.environ,
        ATM_DATABASE_URL=f"sqlite:///{tmp_path}/atm.db",
        ATM_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
    )
    entered = subprocess.run(
        [str(ATM_BIN), "enter_data", "--train-path", str(data_file), "--class-column",
         "label", "--methods", "dt", "--budget", "2"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (entered.returncode, entered.stderr) == (0, ""), entered.stdout + entered.stderr
    stat = data_file.stat()
    data_file.write_bytes(b"\x00" * stat.st_size)
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    worked = subprocess.run(
        [str(ATM_BIN), "worker", "--quiet"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert worked.returncode == 0, worked.stdout + worked.stderr
    hub = ModelHub(env["ATM_DATABASE_URL"], artifact_root=env["ATM_ARTIFACT_ROOT"])
    try:
        assert [c.status for c in hub.classifiers(1)] == [ClassifierStatus.COMPLETE] * 2
    finally:
        hub.close()
