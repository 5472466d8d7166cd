"""Reading data (local, http, fsspec URLs; CSV and parquet), its metadata, and the split.

Every worker re-reads and re-splits the data of a datarun: the split must be the same each
time (seeded, stratified), or the scores of its classifiers are not comparable.
"""

from __future__ import annotations

import csv
import functools
import http.server
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from atm_core.data.dataset import FeatureSchema, inspect_dataset
from atm_core.data.loading import read_table
from atm_core.data.split import load_train_test, split_frames
from atm_core.errors import DataError
from tests.conftest import run_python


def _independent_metadata(path: str) -> dict:
    """What the ATM docs define, computed with the csv module alone."""
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    label = header.index("class")
    labels = [row[label] for row in rows]
    counts = {value: labels.count(value) for value in set(labels)}
    features = [name for name in header if name not in ("class", "")]  # "": a row index
    return {
        "n_examples": len(rows),
        "k_classes": len(counts),
        "d_features": len(features),
        "majority": max(counts.values()) / len(rows),
        "size_kb": math.ceil(Path(path).stat().st_size / 1024),
        "features": features,
    }


@pytest.mark.parametrize("dataset", ["pollution", "iris"])
def test_demo_metadata(dataset: str, pollution_path: str, iris_path: str) -> None:
    path = pollution_path if dataset == "pollution" else iris_path
    expected = _independent_metadata(path)
    info, train, test = inspect_dataset(path)
    assert test is None
    assert info.n_examples == expected["n_examples"]
    assert info.k_classes == expected["k_classes"]
    assert info.d_features == expected["d_features"]
    assert info.majority == pytest.approx(expected["majority"])
    assert info.size_kb == expected["size_kb"]
    assert list(info.schema.columns) == expected["features"]
    assert info.name == Path(path).stem
    assert len(info.content_hash) == 64
    assert list(train.columns) == [*expected["features"], "class"]


def test_documented_numbers_of_the_demo_data(pollution_path: str, iris_path: str) -> None:
    """The quickstart: pollution has 60 rows, 15 numeric features, 2 classes; iris 150/4/3."""
    pollution, _, _ = inspect_dataset(pollution_path)
    assert (pollution.n_examples, pollution.d_features, pollution.k_classes) == (60, 15, 2)
    assert pollution.schema.categorical == ()
    assert pollution.classes == [0, 1]
    iris, _, _ = inspect_dataset(iris_path)
    assert (iris.n_examples, iris.d_features, iris.k_classes) == (150, 4, 3)
    assert iris.majority == pytest.approx(1 / 3)
    assert iris.classes == ["Iris-setosa", "Iris-versicolor", "Iris-virginica"]


def test_row_index_written_by_pandas_is_not_a_feature(tmp_path: Path, iris_path: str) -> None:
    """``to_csv`` writes the index as an unnamed first column; learning from it learns nothing."""
    frame = pd.read_csv(iris_path)
    frame.to_csv(tmp_path / "indexed.csv")  # index=True is pandas' default
    info, train, _ = inspect_dataset(str(tmp_path / "indexed.csv"))
    assert info.d_features == 4 and "Unnamed: 0" not in train.columns
    # an unnamed first column that is not a row index (text) is data and stays
    frame.insert(0, "", ["a", "b", "c"] * 50)
    frame.to_csv(tmp_path / "unnamed.csv", index=False)
    info, _, _ = inspect_dataset(str(tmp_path / "unnamed.csv"))
    assert info.d_features == 5 and info.schema.categorical == ("Unnamed: 0",)


def test_parquet_reads_like_csv(tmp_path: Path, iris_path: str) -> None:
    pd.read_csv(iris_path).to_parquet(tmp_path / "iris.parquet")
    from_csv, csv_frame, _ = inspect_dataset(iris_path)
    from_parquet, parquet_frame, _ = inspect_dataset(str(tmp_path / "iris.parquet"))
    assert from_parquet.name == "iris"
    for field in ("n_examples", "k_classes", "d_features", "majority", "classes", "schema"):
        assert getattr(from_parquet, field) == getattr(from_csv, field), field
    pd.testing.assert_frame_equal(parquet_frame, csv_frame, check_dtype=False)


def test_parquet_rows_come_back_as_pandas_reads_them(tmp_path: Path) -> None:
    """Types (text, nullable integers, categories, times) and a saved index survive."""
    frame = pd.DataFrame(
        {
            "text": ["a", None, "c"],
            "number": [1.5, np.nan, 3.0],
            "flag": [True, False, True],
            "category": pd.Categorical(["x", "y", "x"]),
            "count": pd.array([1, None, 3], dtype="Int64"),
            "when": pd.to_datetime(["2020-01-01", None, "2021-01-01"]),
            "label": ["p", "q", "p"],
        },
        index=pd.Index([10, 20, 30], name="row"),
    )
    frame.to_parquet(tmp_path / "typed.parquet")
    read = read_table(str(tmp_path / "typed.parquet")).frame
    pd.testing.assert_frame_equal(read, pd.read_parquet(tmp_path / "typed.parquet"))
    assert read.index.name == "row" and str(read["text"].dtype) == "str"


def test_reading_parquet_leaves_arrows_dataset_libraries_unloaded(tmp_path: Path) -> None:
    """Every worker reads its data file: ``pyarrow.dataset`` would cost each one 4.4 MB."""
    pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]}).to_parquet(tmp_path / "d.parquet")
    code = (
        "import sys; from atm_core.data.loading import read_table; "
        f"assert len(read_table({str(tmp_path / 'd.parquet')!r}).frame) == 2; "
        "print('pyarrow.dataset' in sys.modules)"
    )
    assert run_python(code).strip() == "False"


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving ``tmp_path`` (base URL, folder)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_url(http_root: tuple[str, Path], pollution_path: str) -> None:
    base, folder = http_root
    (folder / "pollution_1.csv").write_bytes(Path(pollution_path).read_bytes())
    local, local_frame, _ = inspect_dataset(pollution_path)
    remote, remote_frame, _ = inspect_dataset(f"{base}/pollution_1.csv")
    assert remote.name == "pollution_1"
    assert remote.content_hash == local.content_hash  # same bytes, same dataset
    assert (remote.n_examples, remote.d_features, remote.size_kb) == (60, 15, local.size_kb)
    pd.testing.assert_frame_equal(remote_frame, local_frame)


def test_http_missing_file_is_named(http_root: tuple[str, Path]) -> None:
    base, _ = http_root
    with pytest.raises(DataError, match="not found") as caught:
        read_table(f"{base}/absent.csv")
    assert f"{base}/absent.csv" in str(caught.value)


def test_fsspec_urls(tmp_path: Path, iris_path: str) -> None:
    data = Path(iris_path).read_bytes()
    (tmp_path / "iris.csv").write_bytes(data)
    memory = fsspec.filesystem("memory")
    memory.pipe("/atm-tests/iris.csv", data)
    try:
        for url in (f"file://{tmp_path}/iris.csv", "memory://atm-tests/iris.csv"):
            info, _, _ = inspect_dataset(url)
            assert (info.n_examples, info.k_classes, info.d_features) == (150, 3, 4), url
            assert info.name == "iris"
        with pytest.raises(DataError, match=r"not found: memory://atm-tests/absent\.csv"):
            read_table("memory://atm-tests/absent.csv")
    finally:
        memory.rm("/atm-tests", recursive=True)


# -- the split -----------------------------------------------------------------------------------
def _split(path: str, seed: int = 0, test_path: str | None = None, test_size: float = 0.3):
    info, _, _ = inspect_dataset(path, test_path=test_path)
    data = load_train_test(
        path, test_path, "class", info.schema, info.content_hash, seed=seed, test_size=test_size
    )
    return info, data


def test_split_is_seeded_and_the_same_for_every_worker(iris_path: str) -> None:
    _, first = _split(iris_path, seed=3)
    _, again = _split(iris_path, seed=3)
    _, other = _split(iris_path, seed=4)
    pd.testing.assert_frame_equal(first.X_train, again.X_train)
    pd.testing.assert_series_equal(first.y_test, again.y_test)
    assert not first.X_test.equals(other.X_test)


def test_split_is_stratified(iris_path: str, pollution_path: str) -> None:
    _, iris = _split(iris_path)
    assert len(iris.X_test) == 45 and len(iris.X_train) == 105
    assert iris.y_test.value_counts().tolist() == [15, 15, 15]
    assert iris.n_folds == 5
    assert list(iris.X_train.columns) == ["feature_01", "feature_02", "feature_03", "feature_04"]
    _, pollution = _split(pollution_path, test_size=0.5)
    counts = pollution.y_test.value_counts()
    assert abs(counts[1] - 31 / 2) <= 1 and abs(counts[0] - 29 / 2) <= 1
    # train and test together are the dataset, each row once
    whole = pd.concat([pollution.X_train, pollution.X_test])
    assert len(whole.drop_duplicates()) == 60


def test_test_path_is_used_as_is(tmp_path: Path, iris_path: str) -> None:
    frame = pd.read_csv(iris_path).sample(frac=1.0, random_state=1).reset_index(drop=True)
    frame.iloc[:120].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[120:].to_csv(tmp_path / "test.csv", index=False)
    info, data = _split(str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"))
    assert info.n_examples == 150 and info.test_path == str(tmp_path / "test.csv")
    assert len(data.X_train) == 120
    pd.testing.assert_frame_equal(data.X_test, frame.iloc[120:, :4].reset_index(drop=True))
    assert data.y_test.tolist() == frame["class"].iloc[120:].tolist()


def test_test_file_may_order_its_columns_differently(tmp_path: Path, iris_path: str) -> None:
    frame = pd.read_csv(iris_path)
    frame.iloc[::2].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[1::2, ::-1].to_csv(tmp_path / "test.csv", index=False)
    _, data = _split(str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"))
    assert list(data.X_test.columns) == list(data.X_train.columns)
    assert data.X_test.iloc[0].tolist() == frame.iloc[1, :4].tolist()


def test_folds_follow_the_smallest_class(tmp_path: Path) -> None:
    """Three examples of class c: 3-fold cross-validation, not 5."""
    rows = [(i, i % 2) for i in range(20)] + [(100 + i, "c") for i in range(3)]
    pd.DataFrame(rows, columns=["x", "class"]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame([(1, 0), (2, 1), (3, "c")], columns=["x", "class"]).to_csv(
        tmp_path / "test.csv", index=False
    )
    _, data = _split(str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"))
    assert data.n_folds == 3
    assert data.classes == ["0", "1", "c"]


def test_a_holdout_is_laid_out_as_fit_rows_then_judging_rows(iris_path: str) -> None:
    """cv_folds 0: the stratified 80/20 holdout the fits use, its fit rows first and in the
    order a stratified split of the training part gives them (so fits are unchanged)."""
    frame = pd.read_csv(iris_path)
    schema = FeatureSchema.infer(frame.drop(columns=["class"]))
    plain = split_frames(frame, None, "class", schema, seed=3, test_size=0.3, cv_folds=5)
    laid_out = split_frames(frame, None, "class", schema, seed=3, test_size=0.3, cv_folds=0)
    assert laid_out.n_folds == 0 and plain.n_fit == 0
    fit_rows, judge_rows = train_test_split(
        np.arange(len(plain.y_train)), test_size=0.2, random_state=3, stratify=plain.y_train
    )
    assert laid_out.n_fit == len(fit_rows) == 84
    order = np.concatenate([fit_rows, judge_rows])
    pd.testing.assert_frame_equal(
        laid_out.X_train, plain.X_train.iloc[order].reset_index(drop=True)
    )
    assert laid_out.y_train.tolist() == plain.y_train.iloc[order].tolist()
    pd.testing.assert_frame_equal(laid_out.X_test, plain.X_test)  # the test part is untouched


def test_changed_file_is_refused(tmp_path: Path, pollution_path: str) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(Path(pollution_path).read_bytes())
    info, _, _ = inspect_dataset(str(path))
    with path.open("a") as handle:
        handle.write(Path(pollution_path).read_text().splitlines()[1] + "\n")
    with pytest.raises(DataError, match="changed since the dataset was registered"):
        load_train_test(str(path), None, "class", info.schema, info.content_hash, 0, 0.3)


def test_missing_labels_drop_rows_missing_features_do_not(tmp_path: Path) -> None:
    """The original dropped every row with any missing value; only the label is required."""
    text = "a,b,class\n1,,x\n2,3,y\n,4,x\n5,6,\n7,8,y\n9,10,x\n11,12,y\n"
    (tmp_path / "gaps.csv").write_text(text)
    info, train, _ = inspect_dataset(str(tmp_path / "gaps.csv"))
    assert info.n_examples == 6
    assert train["a"].isna().sum() == 1 and train["b"].isna().sum() == 1
    assert train["class"].notna().all()


def test_feature_schema() -> None:
    frame = pd.DataFrame(
        {"n": [1.0, 2.0], "i": [1, 2], "flag": [True, False], "colour": ["red", "blue"]}
    )
    schema = FeatureSchema.infer(frame)
    assert schema.numeric == ("n", "i", "flag") and schema.categorical == ("colour",)
    assert FeatureSchema.from_json(schema.to_json()) == schema
    assert schema.columns == ("n", "i", "flag", "colour")


# -- bad input: a DataError naming the file and the problem --------------------------------------
BAD_FILES = [
    # (file name, content, words the message must contain)
    ("empty.csv", "", "empty"),
    ("blank.csv", "\n\n  \n", "empty"),
    ("header.csv", "a,b,class\n", "header but no rows"),
    ("ragged.csv", "a,b,class\n1,2,0\n3,4,5,6,7\n", "cannot parse"),
    ("quote.csv", 'a,"b,class\n1,2,0\n', "cannot parse"),
    ("nolabel.csv", "a,b,label\n1,2,0\n3,4,1\n", "label column 'class' not found"),
    ("oneclass.csv", "a,b,class\n1,2,x\n3,4,x\n5,6,x\n", "single class"),
    ("nolabels.csv", "a,b,class\n1,2,\n3,4,\n", "has no values"),
    ("onlylabel.csv", "class\n0\n1\n", "no feature columns"),
]


@pytest.mark.parametrize(
    ("name", "content", "words"), BAD_FILES, ids=[case[0] for case in BAD_FILES]
)
def test_bad_file_gives_a_specific_data_error(
    tmp_path: Path, name: str, content: str, words: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=words) as caught:
        inspect_dataset(str(path))
    assert str(path) in str(caught.value)


def test_label_error_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "nolabel.csv"
    path.write_text("alpha,beta,target\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"columns: alpha, beta, target"):
        inspect_dataset(str(path), class_column="class")
    info, _, _ = inspect_dataset(str(path), class_column="target")
    assert info.class_column == "target" and info.d_features == 2


def test_missing_file_folder_binary_and_unknown_protocol(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found") as caught:
        inspect_dataset(str(tmp_path / "nope.csv"))
    assert str(tmp_path / "nope.csv") in str(caught.value)
    with pytest.raises(DataError, match="folder, not a file"):
        inspect_dataset(str(tmp_path))
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not UTF-8"):
        inspect_dataset(str(tmp_path / "binary.csv"))
    with pytest.raises(DataError, match=r"cannot open nosuchproto://x\.csv"):
        inspect_dataset("nosuchproto://x.csv")


def test_test_file_with_other_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("a,b,class\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    (tmp_path / "test.csv").write_text("x,b,class\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError) as caught:
        inspect_dataset(str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"))
    message = str(caught.value)
    assert str(tmp_path / "test.csv") in message
    assert "missing a" in message and "unexpected x" in message


def test_a_class_with_one_example_cannot_be_split(tmp_path: Path) -> None:
    (tmp_path / "rare.csv").write_text("a,class\n1,x\n2,x\n3,y\n4,y\n5,z\n")
    info, train, _ = inspect_dataset(str(tmp_path / "rare.csv"))
    with pytest.raises(DataError, match="'z' has a single example"):
        split_frames(train, None, "class", info.schema, seed=0, test_size=0.3)


@pytest.mark.parametrize("cv_folds", [None, 0])
def test_a_training_class_with_one_example_is_refused_for_folds_and_holdout(
    tmp_path: Path, cv_folds: int | None
) -> None:
    """With a separate test file the training part may hold a class once: neither 5 folds nor
    a stratified holdout can be made of it."""
    (tmp_path / "train.csv").write_text("a,class\n1,x\n2,x\n3,y\n4,y\n5,z\n")
    (tmp_path / "test.csv").write_text("a,class\n6,x\n7,y\n8,z\n")
    info, train, test = inspect_dataset(
        str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv")
    )
    with pytest.raises(DataError, match="too few examples"):
        split_frames(train, test, "class", info.schema, seed=0, test_size=0.3, cv_folds=cv_folds)
