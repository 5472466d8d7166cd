"""Predictions keep the training file's labels exactly, and refuse rows whose numeric columns
hold something else than numbers (issue 18, items 5 and 6): through the `atm predict`
command, the library and the models a user loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atm_core.estimators import TOLERATED_UNREADABLE, UnreadableNumbers
from tests.test_cli import Run, atm, hub  # noqa: F401  (fixtures)


def labelled_file(folder: Path, labels: list[str], name: str = "train.csv") -> Path:
    """Two numeric features that separate the classes, and the labels as written."""
    rng = np.random.default_rng(0)
    lines = ["x,y,label"]
    for row in range(40):
        index = row % len(labels)
        lines.append(f"{index + rng.random() / 4:.4f},{rng.random():.4f},{labels[index]}")
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def train(atm: Run, path: Path) -> int:  # noqa: F811
    assert atm("enter_data", "--train-path", str(path), "--class-column", "label",
               "--methods", "dt", "--budget", "1")[0] == 0  # fmt: skip
    assert atm("worker", "--quiet")[0] == 0
    return 1


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ([" a ", "b", "  Iris setosa "], [" a ", "b", "  Iris setosa "]),
        (["1", "two", "3.5"], ["1", "two", "3.5"]),  # a column of text: strings as written
        (["1", "2", "3"], [1, 2, 3]),
        (["1.0", "2.0", "3.0"], [1.0, 2.0, 3.0]),
        (["0.5", "1.5", "2.25"], ["0.5", "1.5", "2.25"]),  # fractions: classes by their text
    ],
    ids=["spaces", "mixed", "integers", "whole-floats", "fractions"],
)
def test_predictions_are_the_training_files_labels(
    atm: Run,  # noqa: F811
    hub,  # noqa: F811
    tmp_path: Path,
    written: list[str],
    expected: list,
) -> None:
    path = labelled_file(tmp_path, written)
    train(atm, path)
    features = pd.read_csv(path).drop(columns=["label"])
    for final in (True, False):
        labels = list(hub.load_model(1, final=final).predict(features))
        assert set(labels) == set(expected)
        assert {type(label).__name__ for label in labels} == {
            type(np.asarray(expected).tolist()[0]).__name__
            if isinstance(expected[0], str)
            else np.asarray(expected).dtype.name
        }
    features.to_csv(tmp_path / "features.csv", index=False)
    code, out, err = atm("predict", "--classifier-id", "1", str(tmp_path / "features.csv"))
    assert (code, err) == (0, "")
    assert set(out.split("\n")[:-1]) == {str(label) for label in expected}
    written_to = tmp_path / "out.csv"
    atm("predict", "--classifier-id", "1", str(tmp_path / "features.csv"), "--output",
        str(written_to))  # fmt: skip
    assert set(pd.read_csv(written_to, dtype=str)["prediction"]) == set(written)


def test_a_numeric_column_of_text_is_refused(
    atm: Run,  # noqa: F811
    hub,  # noqa: F811
    tmp_path: Path,
    pollution_path: str,
) -> None:
    assert atm("enter_data", "--train-path", pollution_path, "--methods", "dt",
               "--budget", "1")[0] == 0  # fmt: skip
    assert atm("worker", "--quiet")[0] == 0
    frame = pd.read_csv(pollution_path).drop(columns=["class"])
    bad = frame.assign(PREC="abc")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    code, out, err = atm("predict", "--classifier-id", "1", str(tmp_path / "bad.csv"))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "column 'PREC': 60 of 60 values are not numbers (e.g. 'abc')" in err
    with pytest.raises(UnreadableNumbers, match="PREC"):  # a loaded model refuses it too
        hub.load_model(1).predict(bad)

    # a few unreadable cells (within the tolerated share) are read as missing, and reported
    few = frame.astype({"PREC": object})
    few.loc[0, "PREC"] = "?"
    assert 1 / len(few) <= TOLERATED_UNREADABLE
    few.to_csv(tmp_path / "few.csv", index=False)
    code, out, err = atm("predict", "--classifier-id", "1", str(tmp_path / "few.csv"))
    assert code == 0 and len(out.splitlines()) == len(frame)
    assert "warning" in err and "column 'PREC': 1 of 60 values are not numbers" in err
    assert "read as missing" in err
