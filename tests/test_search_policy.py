"""The datarun search policy: time limits, warm start, the default portfolio, CV folds by
size, threads per fit, the final refit and extra worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from baytune.selection.selector import Selector

from atm_core.api import ATM
from atm_core.data.split import folds_for
from atm_core.dataruns import (
    PORTFOLIO,
    SMALL_DATA_PORTFOLIO,
    DatarunRequest,
    enter_data,
)
from atm_core.driver import Driver
from atm_core.errors import ConfigError
from atm_core.isolation import ChildFailed, TimeLimitExceeded, fit_threads, run_isolated
from atm_core.modelhub import ModelHub
from atm_core.modelhub.history import search_state
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus, utcnow
from atm_core.reporting import Reporter
from atm_core.search.proposal import propose
from atm_core.training import DataCache, classifier_time_limit, train_classifier

SLOW_METHOD = textwrap.dedent(
    """
    import time
    from sklearn.tree import DecisionTreeClassifier

    class SleepyTree(DecisionTreeClassifier):
        def __init__(self, max_depth=None, sleep=0.0):
            super().__init__(max_depth=max_depth)
            self.sleep = sleep

        def fit(self, X, y, **kwargs):
            time.sleep(self.sleep)
            return super().fit(X, y, **kwargs)
    """
)


def slow_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleep: float) -> str:
    """A method whose every fit sleeps ``sleep`` seconds (a stand-in for a very slow model)."""
    (tmp_path / "sleepy_module.py").write_text(SLOW_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "sleepy.json"
    path.write_text(
        json.dumps(
            {
                "name": "sleepy",
                "class": "sleepy_module.SleepyTree",
                "hyperparameters": {
                    "max_depth": {"type": "int", "range": [1, 8]},
                    "sleep": {"type": "float_cat", "values": [sleep]},
                },
                "root_hyperparameters": ["max_depth", "sleep"],
            }
        )
    )
    return str(path)


# -- isolation ---------------------------------------------------------------------------------
def test_run_isolated_returns_the_result_and_stops_a_slow_call() -> None:
    assert run_isolated(lambda: {"answer": 42}, 10) == {"answer": 42}
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match=r"stopped after 0\.5 s"):
        run_isolated(lambda: time.sleep(30), 0.5)
    assert time.monotonic() - started < 5


def test_run_isolated_reports_errors_and_dead_children() -> None:
    def fails():
        raise ValueError("broken estimator")

    with pytest.raises(ChildFailed, match="ValueError: broken estimator"):
        run_isolated(fails, 10)
    with pytest.raises(ChildFailed, match="exit code -9"):
        run_isolated(lambda: os.kill(os.getpid(), 9), 10)


def test_run_isolated_returns_large_results_whole_and_reaps_its_children() -> None:
    big = bytes(range(256)) * 40_000  # 10 MB: many pipe reads after the length header
    for _ in range(3):
        assert run_isolated(lambda: big, 30) == big
    child = run_isolated(os.getpid, 30)
    assert child != os.getpid()
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # exited and reaped: no zombie left behind


def _pid_rows_value(context: dict, value: int) -> tuple[int, int, int]:
    return os.getpid(), context["rows"], value


def _sleep_in_fit(context: dict, seconds: float) -> None:
    time.sleep(seconds)


def _fail_in_fit(context: dict) -> None:
    raise ValueError("broken estimator")


def test_fit_process_keeps_one_child_per_dataset_and_replaces_a_stopped_one() -> None:
    from atm_core.isolation import FitProcess

    process = FitProcess()
    data = {"rows": 3}
    first = process.run(_pid_rows_value, (1,), data, 10)
    second = process.run(_pid_rows_value, (2,), data, 10)
    assert first[0] == second[0] != os.getpid()  # one child served both calls
    assert first[1:] == (3, 1) and second[1:] == (3, 2)  # the data was inherited, not sent
    with pytest.raises(ChildFailed, match="ValueError: broken estimator"):
        process.run(_fail_in_fit, (), data, 10)
    assert process.run(_pid_rows_value, (3,), data, 10)[0] == first[0]  # an error keeps it
    with pytest.raises(TimeLimitExceeded):
        process.run(_sleep_in_fit, (30,), data, 0.5)
    third = process.run(_pid_rows_value, (4,), data, 10)
    assert third[0] != first[0]  # the stopped child was replaced
    fourth = process.run(_pid_rows_value, (5,), {"rows": 7}, 10)
    assert fourth[0] != third[0] and fourth[1] == 7  # new data, new child
    process.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(fourth[0], os.WNOHANG)  # exited and reaped: no child left behind
    assert process.run(_pid_rows_value, (6,), data, None)[0] == os.getpid()  # no limit


def _sleep_then_pid(context: dict, seconds: float) -> tuple[int, float]:
    time.sleep(seconds)
    return os.getpid(), seconds


def test_queued_calls_start_when_the_one_before_ends_and_outlive_a_stopped_one() -> None:
    """A call queued behind another gets its whole limit from the moment it starts; a call
    stopped at its limit takes its child, and the calls behind it go to a new one."""
    from atm_core.isolation import FitProcess

    process = FitProcess()
    data = {"rows": 3}
    try:
        first = process.submit(_sleep_then_pid, (1.0,), data, 10)
        second = process.submit(_sleep_then_pid, (0.6,), data, 0.9)  # 1.6 s after it was sent
        pid = process.result(first)[0]
        assert process.result(second) == (pid, 0.6)  # one child, in order, within its limit
        assert second.seconds_running() == pytest.approx(0.6, abs=0.25)

        slow = process.submit(_sleep_then_pid, (30,), data, 0.5)
        behind = process.submit(_sleep_then_pid, (0.1,), data, 10)
        with pytest.raises(TimeLimitExceeded):
            process.result(slow)
        replacement = process.result(behind)[0]
        assert replacement != pid  # the stopped child's queue went to a new child
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # and the stopped one was reaped

        capped = process.submit(_sleep_then_pid, (30,), data, 60, until=time.monotonic() + 0.5)
        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            process.result(capped)  # `until` (the datarun's end) wins over a longer limit
        assert time.monotonic() - started < 5

        other = process.submit(_pid_rows_value, (1,), data, 10)
        new_data = process.submit(_pid_rows_value, (2,), {"rows": 5}, 10)  # answers `other` first
        assert other.done and process.result(new_data)[1] == 5
        ran: list[int] = []
        local = process.submit(lambda context, n: ran.append(n), (7,), data, None)
        assert not local.done and ran == []  # no limit: it runs here, when its result is asked
        process.result(local)
        assert ran == [7]
        queued = process.submit(_sleep_then_pid, (0.1,), {"rows": 5}, 10)
        process.close()
        with pytest.raises(ChildFailed, match="closed before this call ran"):
            process.result(queued)
    finally:
        process.close()


def _threads_by_api(context: object) -> dict[str, set[int]]:
    from threadpoolctl import threadpool_info

    found: dict[str, set[int]] = {}
    for pool in threadpool_info():
        found.setdefault(pool["user_api"], set()).add(pool["num_threads"])
    return found


def test_fit_process_applies_the_thread_limit_in_and_out_of_its_child() -> None:
    import sklearn.ensemble  # noqa: F401  (loads scikit-learn's OpenMP runtime)

    from atm_core.isolation import FitProcess

    process = FitProcess()
    try:
        inside = process.run(_threads_by_api, (), {}, 10, threads=2)
    finally:
        process.close()
    in_process = process.run(_threads_by_api, (), {}, None, threads=2)
    for found in (inside, in_process):  # OpenMP as asked, BLAS single-threaded
        assert found["openmp"] == {2} and found["blas"] == {1}, found


ORPHAN_SCRIPT = """
import os, signal, sys, time
from atm_core.isolation import FitProcess
process = FitProcess()
process.run(len, (), [1, 2], 10)
holder = os.fork()
if holder == 0:  # a process that holds the fit process's request pipe open
    time.sleep(60)
    os._exit(0)
print(process._child.pid, holder, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the worker dies without closing anything
"""


@pytest.mark.slow
def test_a_fit_process_leaves_once_its_worker_is_gone(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    output = tmp_path / "pids.txt"
    with output.open("w") as out:  # a file, not a pipe: the holder keeps its stdout open
        subprocess.run([sys.executable, str(script)], stdout=out, timeout=60, check=False)
    child, holder = map(int, output.read_text().split())

    def running() -> bool:  # an exited orphan may stay a zombie until init reaps it
        try:
            return Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(holder, 9)
    assert not running()  # it noticed it was orphaned and left


def test_fit_threads_limits_openmp_in_forked_children() -> None:
    import sklearn.ensemble  # noqa: F401  (loads scikit-learn's OpenMP runtime)

    with fit_threads(1):
        inside = run_isolated(lambda: _threads_by_api(None), 10)
    assert inside["openmp"] == {1}


# -- time limits ------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_fit_over_the_time_limit_is_errored_and_the_worker_goes_on(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limits wide enough for a slow machine: a real fit needs far less than 10 s, a sleepy
    classifier (6 fits of 60 s) six minutes."""
    sleepy = slow_method(tmp_path, monkeypatch, sleep=60.0)
    datarun_id = (
        enter_data(
            sqlite_hub,
            DatarunRequest(pollution_path, methods=[sleepy, "dt"], budget=3, time_limit=10.0),
        )
        .dataruns[0]
        .id
    )
    Driver(sqlite_hub).run()
    rows = sqlite_hub.classifiers(datarun_id)
    assert len(rows) == 3
    partitions = {hp.id: hp.method for hp in sqlite_hub.hyperpartitions(datarun_id)}
    assert {partitions[row.hyperpartition_id] for row in rows} == {"sleepy", "dt"}
    for row in rows:
        if partitions[row.hyperpartition_id] == "sleepy":
            assert row.status == ClassifierStatus.ERRORED
            assert row.error_message.startswith("time limit: stopped after 10.0 s")
            # stopped inside its first 60 s fit
            assert (row.end_time - row.start_time).total_seconds() < 60
            # charged (hiercost) the 10 s it ran, not the time it waited queued
            assert row.evaluation_seconds == pytest.approx(10.0, abs=1.0)
        else:
            assert row.status == ClassifierStatus.COMPLETE
            assert 0 < row.evaluation_seconds < (row.end_time - row.start_time).total_seconds()
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    state = search_state(sqlite_hub, sqlite_hub.get_datarun(datarun_id))  # what hiercost sees
    seen = sorted(trial.seconds for partition in state.partitions for trial in partition.trials)
    assert seen == sorted(row.evaluation_seconds for row in rows)


def test_default_time_limit_follows_the_budget(sqlite_hub: ModelHub, pollution_path: str) -> None:
    def datarun(**options):
        return enter_data(sqlite_hub, DatarunRequest(pollution_path, **options)).dataruns[0]

    assert classifier_time_limit(datarun(budget=10)) == 600
    assert classifier_time_limit(datarun(budget=10, time_limit=0)) is None
    assert classifier_time_limit(datarun(budget=10, time_limit=7)) == 7
    walltime = datarun(budget_type="walltime", budget=8)
    assert classifier_time_limit(walltime) == pytest.approx(120)  # a quarter of 8 minutes
    short = datarun(budget_type="walltime", budget=1)
    walltime_started = utcnow() - timedelta(seconds=50)
    short.start_time = walltime_started
    assert classifier_time_limit(short) == pytest.approx(10, abs=0.5)  # 10 s left of 60
    deadline = datarun(deadline=datetime.now(UTC) + timedelta(seconds=30))
    assert classifier_time_limit(deadline) == pytest.approx(30, abs=1)


@pytest.mark.slow
def test_walltime_datarun_ends_on_time(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit running at the datarun's end is cut there: the sleepy classifier (6 fits of 60 s)
    that follows dt's default ends at the deadline, not six minutes later."""
    sleepy = slow_method(tmp_path, monkeypatch, sleep=60.0)
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    datarun_id = (
        enter_data(
            sqlite_hub,
            DatarunRequest(pollution_path, methods=["dt", sleepy], budget=100, deadline=deadline),
        )
        .dataruns[0]
        .id
    )
    Driver(sqlite_hub).run()
    datarun = sqlite_hub.get_datarun(datarun_id)
    assert datarun.status == DatarunStatus.COMPLETE
    assert datarun.end_time <= datarun.deadline + timedelta(seconds=10)
    rows = sqlite_hub.classifiers(datarun_id)
    partitions = {hp.id: hp.method for hp in sqlite_hub.hyperpartitions(datarun_id)}
    assert any(c.status == ClassifierStatus.COMPLETE for c in rows)
    [cut] = [c for c in rows if partitions[c.hyperpartition_id] == "sleepy"]
    assert cut.status == ClassifierStatus.ERRORED
    assert cut.error_message.startswith("time limit")


def test_time_limit_must_not_be_negative(sqlite_hub: ModelHub, pollution_path: str) -> None:
    with pytest.raises(ConfigError, match="time_limit"):
        enter_data(sqlite_hub, DatarunRequest(pollution_path, time_limit=-1))
    assert sqlite_hub.dataruns() == []


# -- warm start and the default portfolio ------------------------------------------------------
def test_warm_start_tries_each_method_default_first(sqlite_hub: ModelHub, iris_path: str) -> None:
    entered = enter_data(
        sqlite_hub, DatarunRequest(iris_path, methods=["hgb", "logreg", "knn"], budget=3)
    )
    Driver(sqlite_hub).run()
    rows = sqlite_hub.classifiers(entered.dataruns[0].id)
    partitions = {hp.id: hp for hp in sqlite_hub.hyperpartitions(entered.dataruns[0].id)}
    assert [partitions[r.hyperpartition_id].method for r in rows] == ["hgb", "logreg", "knn"]
    hgb, logreg, knn = (r.hyperparameters_values for r in rows)
    assert hgb["learning_rate"] == 0.1 and hgb["max_leaf_nodes"] == 31
    assert logreg["C"] == 1.0 and logreg["solver"] == "lbfgs"
    assert knn["n_neighbors"] == 5 and knn["weights"] == "uniform"


class LastChoice(Selector):
    """A selector that always takes the last candidate: makes the selector's turn visible."""

    def select(self, choice_scores):
        return sorted(choice_scores)[-1]


def test_without_warm_start_the_selector_decides(sqlite_hub: ModelHub, iris_path: str) -> None:
    def first_method(warm_start: bool) -> str:
        entered = enter_data(
            sqlite_hub,
            DatarunRequest(
                iris_path,
                methods=["hgb", "logreg"],
                budget=1,
                warm_start=warm_start,
                selector=f"{__name__}:LastChoice",
            ),
        )
        datarun_id = entered.dataruns[0].id
        state = search_state(sqlite_hub, sqlite_hub.get_datarun(datarun_id))
        partitions = state.partitions
        chosen = propose(partitions, state.config).proposal.hyperpartition_id
        return {p.id: p.spec.method for p in partitions}[chosen]

    assert first_method(warm_start=True) == "hgb"  # the portfolio's first method
    assert first_method(warm_start=False) == "logreg"  # whatever the selector picks


def test_default_portfolio_by_data_size(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    small = enter_data(sqlite_hub, DatarunRequest(pollution_path))
    assert list(small.partitions_per_method) == [*PORTFOLIO, *SMALL_DATA_PORTFOLIO]
    big = pd.DataFrame({"x": range(12_000), "class": [i % 2 for i in range(12_000)]})
    big.to_csv(tmp_path / "big.csv", index=False)
    large = enter_data(sqlite_hub, DatarunRequest(str(tmp_path / "big.csv")))
    assert list(large.partitions_per_method) == list(PORTFOLIO)


def test_cv_folds_by_size_and_on_request(sqlite_hub: ModelHub, iris_path: str) -> None:
    assert [folds_for(n) for n in (100, 10_000, 10_001, 30_000, 30_001)] == [5, 5, 3, 3, 0]
    assert folds_for(1_000_000, requested=4) == 4
    entered = enter_data(
        sqlite_hub, DatarunRequest(iris_path, methods=["dt"], budget=1, cv_folds=3)
    )
    Driver(sqlite_hub).run()
    [row] = sqlite_hub.classifiers(entered.dataruns[0].id)
    metrics = sqlite_hub.load_metrics(row.id)
    assert (metrics["split"] == "cv").sum() == 3
    with pytest.raises(ConfigError, match="cv_folds"):
        enter_data(sqlite_hub, DatarunRequest(iris_path, cv_folds=1))


def test_a_timed_datarun_holds_out_above_10_000_rows(sqlite_hub: ModelHub, tmp_path: Path) -> None:
    """Under a walltime budget or a deadline, a training part of 10,000-30,000 rows is judged
    on a holdout (one fit, not 3 folds and a refit); the choice is stored with the datarun, so
    every worker makes it; without a time budget, or when asked, the folds stay."""
    assert [folds_for(n, timed=True) for n in (10_000, 10_001, 30_000)] == [5, 0, 0]
    rows = 15_000  # a training part of 10,500 rows
    frame = pd.DataFrame({"x": range(rows), "class": [i % 2 for i in range(rows)]})
    frame.to_csv(tmp_path / "mid.csv", index=False)
    path = str(tmp_path / "mid.csv")
    timed = {"budget_type": "walltime", "budget": 1}
    deadline = (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    by_budget = {
        "walltime": DatarunRequest(path, methods=["dt"], **timed),
        "deadline": DatarunRequest(path, methods=["dt"], deadline=deadline),
        "classifiers": DatarunRequest(path, methods=["dt"]),
        "asked": DatarunRequest(path, methods=["dt"], cv_folds=3, **timed),
    }
    dataruns = {name: enter_data(sqlite_hub, r).dataruns[0] for name, r in by_budget.items()}
    stored = {name: datarun.cv_folds for name, datarun in dataruns.items()}
    assert stored == {"walltime": 0, "deadline": 0, "classifiers": None, "asked": 3}
    walltime = dataruns["walltime"].id
    claim = sqlite_hub.reserve(walltime, sqlite_hub.hyperpartitions(walltime)[0].id, {})
    assert claim is not None
    train_classifier(sqlite_hub, claim, DataCache(), isolated=False)
    metrics = sqlite_hub.load_metrics(claim.classifier_id)
    assert (metrics["split"] == "cv").sum() == 1  # judged once, on the holdout


def test_large_data_is_judged_on_a_holdout(sqlite_hub: ModelHub, iris_path: str) -> None:
    """cv_folds 0 (the default beyond 30,000 training rows): one fit, judged on a holdout from
    the training part; the test part is scored by the same model and not used to judge."""
    entered = enter_data(
        sqlite_hub, DatarunRequest(iris_path, methods=["dt"], budget=1, cv_folds=0)
    )
    Driver(sqlite_hub).run()
    [row] = sqlite_hub.classifiers(entered.dataruns[0].id)
    metrics = sqlite_hub.load_metrics(row.id)
    assert list(metrics["split"]) == ["cv", "test"]
    assert row.cv_judgment_metric_stdev == 0.0
    assert row.cv_judgment_metric == metrics.loc[metrics["split"] == "cv", "f1_macro"].item()
    assert row.test_judgment_metric == metrics.loc[metrics["split"] == "test", "f1_macro"].item()
    # one fit: both rows report the same fit time
    assert metrics["fit_seconds"].nunique() == 1


# -- the model to deploy, and more workers ------------------------------------------------------
def test_refit_best_model_uses_every_row(tmp_path: Path, iris_path: str) -> None:
    atm = ATM(f"sqlite:///{tmp_path / 'atm.db'}", str(tmp_path / "artifacts"))
    result = atm.run(iris_path, methods=["knn"], budget=2)
    stored = atm.hub.load_model(result.get_best_classifier().id, final=False)
    final = result.load_best_model()  # refitted on every row when the search ended
    refit = result.refit_best_model()
    frame = pd.read_csv(iris_path)
    assert stored.named_steps["estimator"].n_samples_fit_ < len(frame)
    assert final.named_steps["estimator"].n_samples_fit_ == len(frame)
    assert refit.named_steps["estimator"].n_samples_fit_ == len(frame)
    path = result.export_best_classifier(tmp_path / "final.pkl", refit=True)
    import pickle

    exported = pickle.loads(path.read_bytes())
    assert exported.named_steps["estimator"].n_samples_fit_ == len(frame)
    assert (exported.predict(frame) == refit.predict(frame)).all()


@pytest.mark.slow
def test_run_with_extra_worker_processes(
    tmp_path: Path, pollution_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``workers=2``: a second `atm worker` process shares the datarun (and the budget)."""
    # >= 2.4 s per classifier: the helper process starts (7-10 s on a busy machine) before
    # this one has trained all 8 (with 1.2 s it had once, under a test run beside it)
    sleepy = slow_method(tmp_path, monkeypatch, sleep=0.4)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the helper process imports it too
    atm = ATM(f"sqlite:///{tmp_path / 'atm.db'}", str(tmp_path / "artifacts"), poll_seconds=0.2)

    class Count(Reporter):
        finished = 0

        def classifier_finished(self, result) -> None:
            Count.finished += 1

    result = atm.run(pollution_path, methods=[sleepy], budget=8, workers=2, reporter=Count())
    rows = atm.hub.classifiers(result.id)
    assert len(rows) == 8 and {r.status for r in rows} == {ClassifierStatus.COMPLETE}
    assert result.datarun.status == DatarunStatus.COMPLETE
    assert 0 < Count.finished < 8  # this process trained some, the helper process the rest
