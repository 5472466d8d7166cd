"""The `atm` command line: the original commands and flags, and one-line errors for bad input."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from atm_core import cli
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import BudgetType, DatarunStatus, ScoreTarget
from atm_core.search.catalogue import load_method
from atm_core.search.hyperpartitions import enumerate_hyperpartitions
from tests.conftest import make_settings, run_python

ATM_BIN = Path(sys.executable).parent / "atm"  # the interpreter's own install

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def atm(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Run:
    """``atm COMMAND --database-url ... --artifact-root ... ARGS`` in-process: (code, out, err)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    locations = ["--database-url", sqlite_url, "--artifact-root", str(tmp_path / "artifacts")]

    def run(command: str, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main([command, *locations, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def hub(sqlite_url: str, tmp_path: Path):
    """The ModelHub the `atm` fixture writes to, for checking what the commands did."""
    instance = ModelHub(settings=make_settings(sqlite_url, tmp_path))
    yield instance
    instance.close()


@pytest.fixture
def trained(atm: Run, pollution_path: str) -> int:
    """A finished 3-classifier datarun on pollution; returns its id."""
    assert (
        atm("enter_data", "--train-path", pollution_path, "--methods", "dt", "--budget", "3")[0]
        == 0
    )
    assert atm("worker", "--quiet")[0] == 0
    return 1


# -- enter_data -----------------------------------------------------------------------------
def test_enter_data_prints_partition_counts_and_summary(atm: Run, pollution_path: str) -> None:
    code, out, err = atm(
        "enter_data", "--train-path", pollution_path, "--methods", "logreg", "dt", "knn", "gnb",
        "--budget", "5",
    )  # fmt: skip
    assert (code, err) == (0, "")
    for method in ("logreg", "dt", "knn", "gnb"):
        count = len(enumerate_hyperpartitions(load_method(method)))
        assert f"method {method} has {count} hyperpartitions" in out
    lines = [line.strip() for line in out.splitlines()]
    for expected in (
        "Data entry complete. Summary:",
        "Dataset ID: 1",
        f"Training data: {pollution_path}",
        "Test data: None",
        "Datarun ID: 1",
        "Hyperpartition selection strategy: hiercost",
        "Parameter tuning strategy: uniform",
        "Budget: 5 (classifier)",
    ):
        assert expected in lines


def test_enter_data_flags_reach_the_datarun(atm: Run, hub: ModelHub, pollution_path: str) -> None:
    deadline = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    code, _, err = atm(
        "enter_data", "--train-path", pollution_path, "--class-column", "class",
        "--methods", "dt", "--priority", "4", "--budget-type", "walltime", "--budget", "7",
        "--deadline", deadline, "--metric", "roc_auc", "--score-target", "test",
        "--tuner", "gp", "--selector", "bestk", "--r-minimum", "3", "--k-window", "6",
        "--gridding", "5",
    )  # fmt: skip
    assert code == 0, err
    [datarun] = hub.dataruns()
    assert (datarun.priority, datarun.budget_type, datarun.budget) == (4, BudgetType.WALLTIME, 7)
    assert (datarun.metric, datarun.score_target) == ("roc_auc", ScoreTarget.TEST)
    assert (datarun.tuner, datarun.selector) == ("gp", "bestk")
    assert (datarun.r_minimum, datarun.k_window, datarun.gridding) == (3, 6, 5)
    assert datarun.deadline is not None and datarun.deadline > datetime.now() - timedelta(days=1)
    assert [hp.method for hp in hub.hyperpartitions(datarun.id)] == ["dt", "dt"]


def test_learner_budget_type_is_the_classifier_budget(
    atm: Run, hub: ModelHub, pollution_path: str
) -> None:
    """The documentation calls the classifier budget "learner"; both spellings work."""
    code, out, _ = atm(
        "enter_data", "--train-path", pollution_path, "--budget-type", "learner", "--budget", "2"
    )
    assert code == 0
    assert "Budget: 2 (classifier)" in out
    assert hub.dataruns()[0].budget_type == BudgetType.CLASSIFIER


def test_run_per_partition_creates_a_datarun_per_partition(
    atm: Run, hub: ModelHub, pollution_path: str
) -> None:
    code, out, _ = atm(
        "enter_data", "--train-path", pollution_path, "--methods", "dt", "gnb",
        "--run-per-partition",
    )  # fmt: skip
    assert code == 0
    assert "Datarun IDs: 1, 2, 3" in out
    assert [len(hub.hyperpartitions(d.id)) for d in hub.dataruns()] == [1, 1, 1]


def test_multiclass_metric_mapping_is_shown(atm: Run, iris_path: str) -> None:
    code, out, _ = atm("enter_data", "--train-path", iris_path, "--metric", "f1")
    assert code == 0
    assert "Metric: f1_macro (cv, from 'f1')" in out


# -- worker ---------------------------------------------------------------------------------
def test_worker_prints_what_the_original_printed(
    atm: Run, pollution_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chosen parameters, judgment metric, new best, saved paths (each on one line), the end."""
    monkeypatch.setenv("COLUMNS", "80")  # long paths must not be wrapped onto the next line
    atm("enter_data", "--train-path", pollution_path, "--methods", "dt", "--budget", "3")
    code, out, err = atm("worker")
    assert code == 0, err
    lines = out.splitlines()
    assert "Computing on datarun 1 (pollution_1, f1 cv)" in lines
    assert sum(line.startswith('Chose parameters for method "dt"') for line in lines) == 3
    judged = [line for line in lines if line.startswith("Judgment metric (f1, cv): ")]
    assert len(judged) == 3
    assert "New best score! (first complete classifier)" in lines
    saved = [line for line in lines if line.startswith("Saving model in: ")]
    assert len(saved) == 3 and all(line.endswith("model.pkl") for line in saved)
    metrics = [line for line in lines if line.startswith("Saving metrics in: ")]
    assert all(line.endswith("metrics.parquet") for line in metrics)
    assert [line for line in lines if line.startswith("Saved classifier")] == [
        f"Saved classifier {i}." for i in (1, 2, 3)
    ]
    assert "    max_depth = " in "\n".join(lines)
    tail = lines.index("Classifier budget has run out!")
    assert lines[tail + 1] == "Datarun 1 has ended."
    assert lines[tail + 2].startswith("Ensemble: ")  # the datarun's, chosen as it completed
    assert lines[tail + 2].endswith("atm predict --ensemble 1 FILE")
    assert lines[tail + 3] == "No dataruns found. Exiting."
    assert "3/3 classifiers" in out  # the progress bar


def test_worker_quiet_shows_only_the_progress(atm: Run, pollution_path: str) -> None:
    atm("enter_data", "--train-path", pollution_path, "--methods", "gnb")
    code, out, _ = atm("worker", "--quiet")
    assert code == 0
    assert "Chose parameters" not in out
    assert "1/100 classifiers" in out


def test_worker_dataruns_flag(atm: Run, hub: ModelHub, pollution_path: str) -> None:
    for priority in ("9", "1"):
        atm(
            "enter_data", "--train-path", pollution_path, "--methods", "gnb", "--priority", priority
        )
    code, out, _ = atm("worker", "--dataruns", "2")
    assert code == 0
    assert "Computing on datarun 2" in out and "Computing on datarun 1" not in out
    first, second = hub.dataruns()
    assert hub.classifiers(first.id) == [] and first.status == DatarunStatus.PENDING
    assert second.status == DatarunStatus.COMPLETE


def test_worker_total_time_flag(atm: Run, hub: ModelHub, pollution_path: str) -> None:
    atm("enter_data", "--train-path", pollution_path, "--methods", "dt", "--budget", "500")
    code, _, _ = atm("worker", "--quiet", "--total-time", "0.01")
    assert code == 0
    [datarun] = hub.dataruns()
    assert 0 < len(hub.classifiers(datarun.id)) < 500
    assert datarun.status == DatarunStatus.RUNNING


def test_worker_without_dataruns(atm: Run) -> None:
    code, out, _ = atm("worker")
    assert code == 0
    assert "No dataruns found. Exiting." in out


# -- status, leaderboard, predict, export ---------------------------------------------------
def test_status_lists_dataruns(atm: Run, trained: int, pollution_path: str) -> None:
    atm("enter_data", "--train-path", pollution_path, "--methods", "gnb", "--budget", "4")
    code, out, _ = atm("status")
    assert code == 0
    rows = [line for line in out.splitlines() if "pollution_1" in line]
    assert len(rows) == 2
    assert "complete" in rows[0] and "3 classifier" in rows[0]
    assert "pending" in rows[1] and "4 classifier" in rows[1]


def test_leaderboard_table_and_csv(atm: Run, hub: ModelHub, trained: int, tmp_path: Path) -> None:
    output = tmp_path / "board.csv"
    code, out, _ = atm("leaderboard", str(trained), "--output", str(output))
    assert code == 0
    assert "Datarun 1 leaderboard (f1, cv)" in out
    board = pd.read_csv(output)
    expected = hub.leaderboard(trained)
    assert board["classifier_id"].tolist() == expected["classifier_id"].tolist()
    assert len(board) == 3
    best = hub.best_classifier(trained)
    assert board.loc[0, "classifier_id"] == best.id
    assert board.loc[0, "cv_judgment_metric"] == pytest.approx(best.cv_judgment_metric)
    code, out, _ = atm("leaderboard", str(trained), "--limit", "1")
    assert code == 0
    assert f"{best.cv_judgment_metric:.3f}" in out


@pytest.mark.parametrize(
    "command",
    [["leaderboard", "99"], ["ensemble", "99"], ["worker", "--dataruns", "1", "99"]],
    ids=["leaderboard", "ensemble", "worker"],
)
def test_an_unknown_datarun_is_one_line_and_exit_2(
    atm: Run, trained: int, command: list[str]
) -> None:
    code, out, err = atm(*command)
    assert code == 2
    assert err.strip() == f"atm {command[0]}: error: no datarun with id 99 in the ModelHub"
    assert "Chose parameters" not in out  # nothing ran, not even on the known datarun 1


@pytest.mark.slow
def test_test_method_fits_every_partition_and_fails_on_a_broken_one(
    atm: Run, tmp_path: Path
) -> None:
    code, out, _ = atm("test-method", "knn")
    assert code == 0
    partitions = enumerate_hyperpartitions(load_method("knn"))
    assert f"{len(partitions)} of {len(partitions)} hyperpartitions fitted" in out
    assert out.count(" OK ") == len(partitions)

    broken = tmp_path / "broken.json"
    broken.write_text(
        '{"name": "broken", "class": "sklearn.tree.DecisionTreeClassifier",'
        ' "hyperparameters": {"criterion": {"type": "string", "values": ["gini", "nope"]}},'
        ' "root_hyperparameters": ["criterion"]}'
    )
    code, out, _ = atm("test-method", str(broken))
    assert code == 1
    assert "1 of 2 hyperpartitions fitted; 1 failed" in out
    assert "InvalidParameterError" in out and "nope" in out


@pytest.mark.parametrize("command", [["--help"], ["status"], ["leaderboard", "1"], ["methods"]])
def test_reading_commands_import_no_data_or_orchestration_stack(
    trained: int, sqlite_url: str, tmp_path: Path, command: list[str]
) -> None:
    """`atm --help`, status, leaderboard and methods start fast: no scikit-learn, scipy,
    pandas, Prefect or alembic in a fresh interpreter."""
    code = f"""
        import io, contextlib, sys
        from atm_core.cli import main
        argv = {command!r} + ([] if {command!r} == ["--help"] else
            ["--database-url", {sqlite_url!r}, "--artifact-root", {str(tmp_path / "artifacts")!r}])
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
            except SystemExit:
                pass
        heavy = ("sklearn", "scipy", "pandas", "prefect", "alembic", "baytune", "pyarrow")
        print(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)))
    """
    assert run_python(code).strip() == "[]"


@pytest.mark.parametrize(
    "options",
    [
        ["--methods", "dt", "knn", "--selector", "ucb1", "--tuner", "gp_ei"],
        [],  # the default portfolio
        ["--methods", "nosuchmethod", "--tuner", "nosuchtuner", "--budget", "0"],  # refused
    ],
    ids=["named", "default", "refused"],
)
def test_enter_data_imports_no_scikit_learn_baytune_or_prefect(
    sqlite_url: str, tmp_path: Path, pollution_path: str, options: list[str]
) -> None:
    """`atm enter_data` checks names (methods, selector, tuner, metric) from plain data and
    splits with numpy: its start-up is the data stack's (pandas, pyarrow) and SQLAlchemy's."""
    code = f"""
        import io, contextlib, sys
        from atm_core.cli import main
        argv = ["enter_data", "--train-path", {pollution_path!r}, *{options!r},
            "--database-url", {sqlite_url!r}, "--artifact-root", {str(tmp_path / "a")!r}]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(argv)
        heavy = ("sklearn", "scipy", "prefect", "baytune", "joblib")
        print(code, sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)))
    """
    refused = "nosuchmethod" in options
    assert run_python(code).strip() == f"{2 if refused else 0} []"


def test_predict_prints_one_label_per_row(
    atm: Run, hub: ModelHub, trained: int, pollution_path: str, tmp_path: Path
) -> None:
    best = hub.best_classifier(trained).id
    features = tmp_path / "features.csv"
    frame = pd.read_csv(pollution_path)
    frame.drop(columns=["class"]).to_csv(features, index=False)
    code, out, _ = atm("predict", "--classifier-id", str(best), str(features))
    assert code == 0
    labels = out.splitlines()
    assert len(labels) == len(frame)
    expected = hub.load_model(best).predict(frame.drop(columns=["class"]))
    assert labels == [str(label) for label in expected]

    written = tmp_path / "predictions.csv"
    code, out, _ = atm(
        "predict", "--classifier-id", str(best), str(features), "--output", str(written)
    )
    assert code == 0 and "60 predictions written" in out
    assert pd.read_csv(written)["prediction"].tolist() == list(expected)


def test_predict_with_string_labels(atm: Run, hub: ModelHub, iris_path: str) -> None:
    atm("enter_data", "--train-path", iris_path, "--methods", "gnb")
    atm("worker", "--quiet")
    code, out, _ = atm("predict", "--classifier-id", "1", iris_path)
    assert code == 0
    labels = out.splitlines()
    assert len(labels) == 150
    assert set(labels) == {"Iris-setosa", "Iris-versicolor", "Iris-virginica"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--classifier-id", "999", "FEATURES"], "no classifier with id 999"),
        (["--classifier-id", "1", "MISSING"], "not found"),
        (["--classifier-id", "1", "FEW_COLUMNS"], "lacks feature columns"),
    ],
    ids=["unknown-classifier", "missing-file", "missing-columns"],
)
def test_predict_errors(
    atm: Run, trained: int, tmp_path: Path, args: list[str], expected: str
) -> None:
    (tmp_path / "features.csv").write_text("PREC,JANT\n1,2\n")
    names = {
        "FEATURES": str(tmp_path / "features.csv"),
        "MISSING": str(tmp_path / "nope.csv"),
        "FEW_COLUMNS": str(tmp_path / "features.csv"),
    }
    code, out, err = atm("predict", *[names.get(arg, arg) for arg in args])
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_export_writes_a_loadable_model(
    atm: Run, hub: ModelHub, trained: int, pollution_path: str, tmp_path: Path
) -> None:
    best = hub.best_classifier(trained).id
    target = tmp_path / "out" / "best.pkl"
    code, out, _ = atm("export", "--classifier-id", str(best), str(target))
    assert code == 0 and f"exported to {target}" in out
    model = pickle.loads(target.read_bytes())
    features = pd.read_csv(pollution_path).drop(columns=["class"])
    assert list(model.predict(features)) == list(hub.load_model(best).predict(features))

    code, _, err = atm("export", "--classifier-id", str(best), str(target))
    assert code == 2 and "exists" in err
    assert atm("export", "--classifier-id", str(best), str(target), "--force")[0] == 0


def test_tampered_model_is_refused_by_predict_and_export(
    atm: Run, hub: ModelHub, trained: int, pollution_path: str, tmp_path: Path
) -> None:
    """Both the final model (refitted on every row) and the search-time one are checked."""
    best = hub.best_classifier(trained)
    for location, flags in ((best.final_model_location, []), (best.model_location,
                            ["--search-time"])):  # fmt: skip
        path = Path(location)
        path.write_bytes(path.read_bytes()[:-1] + b"!")
        code, _, err = atm("predict", "--classifier-id", str(best.id), *flags, pollution_path)
        assert code == 2 and "sha256" in err
        target = tmp_path / "exported.pkl"
        code, _, err = atm("export", "--classifier-id", str(best.id), *flags, str(target))
        assert code == 2 and "sha256" in err
        assert not target.exists()


def test_methods_lists_the_catalogue(atm: Run) -> None:
    code, out, _ = atm("methods")
    assert code == 0
    for name in ("logreg", "dt", "knn", "gnb", "svm", "mlp"):
        assert f" {name} " in out


# -- bad input ------------------------------------------------------------------------------
OK_ROWS = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(12))
FILES = {
    "empty.csv": "",
    "header.csv": "a,b,class\n",
    "ragged.csv": "a,b,class\n1,2,0\n3,4,5,6,7\n",
    "binary.csv": "a,b,class\n1,\x00\x01,0\n",
    "oneclass.csv": "a,b,class\n1,2,x\n3,4,x\n5,6,x\n",
    "nolabel.csv": "a,b,label\n1,2,0\n3,4,1\n",
    "unlabelled.csv": "a,b,class\n1,2,\n3,4,\n",
    "ok.csv": "a,b,class\n" + OK_ROWS,
    "othercols.csv": "x,y,class\n1,2,0\n3,4,1\n",
    "broken.json": '{"name": "broken", "class": ',
    "noclass.json": (
        '{"name": "ghost", "class": "no_such_module.Classifier", '
        '"hyperparameters": {}, "root_hyperparameters": []}'
    ),
    "empty_plugin.py": "X = 1\n",
}

BAD_INPUTS = {
    "missing-file": (["--train-path", "nope.csv"], "data file not found"),
    "empty-file": (["--train-path", "empty.csv"], "empty"),
    "header-only": (["--train-path", "header.csv"], "header but no rows"),
    "unparseable-csv": (["--train-path", "ragged.csv"], "cannot parse"),
    "binary-file": (["--train-path", "binary.csv"], "cannot parse"),
    "label-column-absent": (["--train-path", "nolabel.csv"], "label column 'class' not found"),
    "single-class": (["--train-path", "oneclass.csv"], "single class"),
    "labels-all-missing": (["--train-path", "unlabelled.csv"], "has no values"),
    "unknown-method": (["--methods", "nosuchmethod"], "unknown method 'nosuchmethod'"),
    "invalid-method-json": (["--methods", "broken.json"], "invalid JSON"),
    "method-file-not-found": (["--methods", "gone.json"], "method file not found"),
    "custom-class-not-found": (["--methods", "noclass.json"], "cannot import"),
    "duplicate-method": (["--methods", "dt", "dt"], "given twice"),
    "unknown-selector": (["--selector", "nosuchselector"], "unknown selector 'nosuchselector'"),
    "unknown-tuner": (["--tuner", "nosuchtuner"], "unknown tuner 'nosuchtuner'"),
    "custom-selector-file-not-found": (["--selector", "gone.py:Mine"], "file not found"),
    "custom-tuner-class-not-found": (["--tuner", "empty_plugin.py:Mine"], "'Mine' not found"),
    "unknown-metric": (["--metric", "nosuchmetric"], "unknown metric 'nosuchmetric'"),
    "rank-accuracy-on-binary": (["--metric", "rank_accuracy"], "not valid for a binary problem"),
    "ap-on-iris": (["--train-path", "IRIS", "--metric", "ap"], "not valid for a 3-class problem"),
    "unknown-score-target": (["--score-target", "best"], "unknown score target 'best'"),
    "budget-zero": (["--budget", "0"], "budget must be a whole number of classifiers"),
    "budget-negative": (["--budget", "-5"], "budget must be a whole number of classifiers"),
    "gridding-one": (["--gridding", "1"], "gridding"),
    "deadline-in-the-past": (["--deadline", "2001-01-01 00:00"], "in the past"),
    "deadline-unreadable": (["--deadline", "next tuesday"], "cannot read deadline"),
    "test-columns-differ": (["--test-path", "othercols.csv"], "different columns"),
    "test-file-missing": (["--test-path", "gone.csv"], "data file not found"),
    "no-train-path": (["--train-path", ""], "--train-path is required"),
}


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    for name, content in FILES.items():
        (tmp_path / name).write_text(content)
    return tmp_path


def assert_nothing_written(folder: Path, database_url: str) -> None:
    """No dataset, datarun or hyperpartition row and no artifact folder after a refusal."""
    assert not (folder / "artifacts").exists()
    hub = ModelHub(settings=make_settings(database_url, folder))
    try:
        assert hub.datasets() == [] and hub.dataruns() == []
    finally:
        hub.close()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    case: str, atm: Run, bad_files: Path, sqlite_url: str, iris_path: str
) -> None:
    args, expected = BAD_INPUTS[case]
    args = [iris_path if arg == "IRIS" else arg for arg in args]
    if "--train-path" not in args:
        args = ["--train-path", "ok.csv", *args]
    code, out, err = atm("enter_data", *args)
    assert code == 2, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("atm enter_data: error: ")
    assert expected in lines[0]
    assert_nothing_written(bad_files, sqlite_url)


def test_the_ok_file_of_the_bad_input_cases_is_accepted(atm: Run, bad_files: Path) -> None:
    """Proves the failures above come from the one bad option, not from the base file."""
    code, out, err = atm("enter_data", "--train-path", "ok.csv", "--methods", "gnb")
    assert code == 0, err
    assert "Datarun ID: 1" in out


@pytest.mark.slow  # a fresh interpreter per case
@pytest.mark.parametrize(
    "case", ["missing-file", "single-class", "unknown-method", "test-columns-differ"]
)
def test_bad_input_through_the_installed_command(
    case: str, bad_files: Path, sqlite_url: str
) -> None:
    """The real `atm` executable: exit code 2, the message, no traceback, nothing written."""
    args, expected = BAD_INPUTS[case]
    if "--train-path" not in args:
        args = ["--train-path", "ok.csv", *args]
    env = dict(
        os.environ, ATM_DATABASE_URL=sqlite_url, ATM_ARTIFACT_ROOT=str(bad_files / "artifacts")
    )
    result = subprocess.run(
        [str(ATM_BIN), "enter_data", *args],
        cwd=bad_files,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert_nothing_written(bad_files, sqlite_url)
