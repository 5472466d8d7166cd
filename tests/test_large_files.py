"""Large data files (issue 18, item 7): a CSV is read with pyarrow's streaming reader into
small pandas types, hashed on the way, and split without a Python object per row.

The CSV here (80,000 rows, 4.8 MB) spans more than one of the reader's 4 MB blocks: types that
change after the first block are tested. Speed and memory are measured by
``benchmarks/large_csv.py``, never asserted.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.model_selection import train_test_split

from atm_core.console import ReadingProgress
from atm_core.data.dataset import FeatureSchema, read_dataset
from atm_core.data.loading import compact, read_table, reporting_reads
from atm_core.data.split import load_all_rows
from atm_core.data.stratified import label_codes, stratified_rows
from atm_core.estimators import as_categories
from atm_core.pipeline import build_pipeline

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
    for _ in range(150):
        n, k = int(rng.integers(20, 2000)), int(rng.integers(2, 7))
        labels = np.array([f"c{v}" for v in rng.choice(k, n, p=rng.dirichlet(np.ones(k)))])
        seed = int(rng.integers(0, 1000))
        size = {"test_size": 0.3} if rng.random() < 0.5 else {"train_size": n // 3}
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
