"""The worker: select -> tune -> train -> score -> save, budgets, errors, leases, many workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from atm_core import cli
from atm_core.artifacts import ArtifactStoreError
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver, next_claim
from atm_core.modelhub import ModelHub
from atm_core.modelhub.history import hyperpartition_spec
from atm_core.modelhub.models import (
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    ErrorKind,
    HyperpartitionStatus,
    utcnow,
)
from atm_core.reporting import Reporter
from atm_core.training import DataCache, train_classifier
from tests.conftest import make_settings

ATM_BIN = Path(sys.executable).parent / "atm"  # the interpreter's own install

ESTIMATOR_MODULE = '''
import time
from pathlib import Path

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.naive_bayes import GaussianNB

HERE = Path(__file__).parent


class Estimator(ClassifierMixin, BaseEstimator):
    """GaussianNB with a configurable misbehaviour in fit (see the tests)."""

    def __init__(self, alpha=0.5):
        self.alpha = alpha

    def fit(self, X, y):
{behaviour}
        self.model_ = GaussianNB().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)
'''

BEHAVIOURS = {
    "fails": 'raise ValueError("deliberate failure in fit")',
    # Ctrl+C in the middle of a fit, once.
    "interrupts_once": textwrap.dedent(
        """
        flag = HERE / "interrupt.flag"
        if flag.exists():
            flag.unlink()
            raise KeyboardInterrupt
        """
    ),
    # Blocks while block.flag exists: a worker stuck in a long fit, killed from outside.
    "blocks": textwrap.dedent(
        """
        while (HERE / "block.flag").exists():
            time.sleep(0.05)
        """
    ),
    # Each fit takes 0.5 s while slow.flag exists: longer than a lease of 1 s over 6 fits.
    "slow": textwrap.dedent(
        """
        if (HERE / "slow.flag").exists():
            time.sleep(0.5)
        """
    ),
}


def custom_method(folder: Path, monkeypatch: pytest.MonkeyPatch, behaviour: str) -> str:
    """Write a method JSON whose class lives in a fresh module under ``folder``; return its path.

    The module name is unique per call so no test sees another test's cached module.
    """
    module = f"atm_test_{behaviour}_{uuid.uuid4().hex[:8]}"
    body = textwrap.indent(BEHAVIOURS[behaviour].strip(), " " * 8)
    (folder / f"{module}.py").write_text(ESTIMATOR_MODULE.format(behaviour=body))
    monkeypatch.syspath_prepend(str(folder))
    method = {
        "name": behaviour,
        "class": f"{module}.Estimator",
        "hyperparameters": {"alpha": {"type": "float", "range": [0.0, 1.0]}},
        "root_hyperparameters": ["alpha"],
        "conditional_hyperparameters": {},
    }
    path = folder / f"{behaviour}.json"
    path.write_text(json.dumps(method))
    return str(path)


class Recorder(Reporter):
    """Keeps what the worker reported, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def datarun_started(self, datarun, dataset) -> None:
        self.events.append(("started", datarun.id))

    def classifier_started(self, claim, method, values) -> None:
        self.events.append(("classifier", claim.classifier_id, claim.attempt))

    def classifier_finished(self, result) -> None:
        self.events.append(("finished", result.classifier_id, result.status))

    def datarun_ended(self, datarun, reason) -> None:
        self.events.append(("ended", datarun.id, reason))

    def no_dataruns(self) -> None:
        self.events.append(("none",))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == kind]


def enter(hub: ModelHub, path: str, **options) -> int:
    return enter_data(hub, DatarunRequest(path, **options)).dataruns[0].id


def set_datarun(hub: ModelHub, datarun_id: int, **values) -> None:
    with hub.transaction() as session:
        session.execute(update(Datarun).where(Datarun.id == datarun_id).values(**values))


def statuses(hub: ModelHub, datarun_id: int) -> list[str]:
    return [c.status.value for c in hub.classifiers(datarun_id)]


def subprocess_env(hub: ModelHub, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ATM_DATABASE_URL=hub.settings.database_url,
        ATM_ARTIFACT_ROOT=hub.settings.artifact_root,
        ATM_POLL_SECONDS="0.2",
        COLUMNS="200",
    )
    env.update(extra)
    return env


# -- one worker, classifier budget ----------------------------------------------------------
def test_budget_of_n_yields_n_stored_classifiers(sqlite_hub: ModelHub, pollution_path: str) -> None:
    """Every classifier is chosen within its partition, trained, scored and stored."""
    datarun_id = enter(sqlite_hub, pollution_path, methods=["logreg", "dt", "knn"], budget=4)
    recorder = Recorder()
    Driver(sqlite_hub, reporter=recorder).run()

    classifiers = sqlite_hub.classifiers(datarun_id)
    assert [c.status for c in classifiers] == [ClassifierStatus.COMPLETE] * 4
    partitions = {hp.id: hyperpartition_spec(hp) for hp in sqlite_hub.hyperpartitions(datarun_id)}
    for classifier in classifiers:
        spec = partitions[classifier.hyperpartition_id]
        values = classifier.hyperparameters_values
        for name, value in spec.fixed_values().items():
            assert values[name] == value
        for param in spec.tunables:
            low, high = param.range
            assert low - 1e-9 * abs(low) <= values[param.name] <= high + 1e-9 * abs(high)
        assert 0.0 <= classifier.cv_judgment_metric <= 1.0
        assert classifier.cv_judgment_metric_stdev >= 0.0
        assert 0.0 <= classifier.test_judgment_metric <= 1.0
        assert Path(classifier.model_location).is_file()
        metrics = pd.read_parquet(classifier.metrics_location)
        assert list(metrics["split"]) == ["cv"] * 5 + ["test"]
        assert metrics.loc[metrics["split"] == "cv", "f1"].mean() == pytest.approx(
            classifier.cv_judgment_metric
        )
        assert classifier.start_time <= classifier.end_time
        assert classifier.claim_token is not None and classifier.lease_expires_at is None

    datarun = sqlite_hub.get_datarun(datarun_id)
    assert datarun.status == DatarunStatus.COMPLETE
    assert datarun.start_time <= datarun.end_time
    assert recorder.of("started") == [("started", datarun_id)]
    assert len(recorder.of("classifier")) == 4
    assert [e[2] for e in recorder.of("finished")] == ["complete"] * 4
    assert recorder.of("ended") == [("ended", datarun_id, "classifier budget has run out")]
    assert recorder.events[-1] == ("none",)


def test_partition_without_tunables_gives_one_classifier(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    """gnb: one configuration, then gridding_done and the datarun completes (budget unused)."""
    datarun_id = enter(sqlite_hub, pollution_path, methods=["gnb"], budget=10)
    recorder = Recorder()
    Driver(sqlite_hub, reporter=recorder).run()
    assert statuses(sqlite_hub, datarun_id) == ["complete"]
    assert [hp.status for hp in sqlite_hub.hyperpartitions(datarun_id)] == [
        HyperpartitionStatus.GRIDDING_DONE
    ]
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    assert recorder.of("ended") == [("ended", datarun_id, "no hyperpartition is left to explore")]


def test_no_dataruns_returns_at_once(sqlite_hub: ModelHub) -> None:
    recorder = Recorder()
    Driver(sqlite_hub, reporter=recorder).run()
    assert recorder.events == [("none",)]


# -- errors ---------------------------------------------------------------------------------
def test_the_next_classifier_fits_while_the_last_is_recorded(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    """The worker keeps one claim queued in its fit process: when a classifier is reported,
    the next one is already claimed (and fitting), yet the console shows them one by one."""
    datarun_id = enter(sqlite_hub, pollution_path, methods=["dt"], budget=6)
    running_at_finish: list[int] = []

    class Watching(Recorder):
        def classifier_finished(self, result) -> None:
            super().classifier_finished(result)
            running_at_finish.append(sqlite_hub.running_count(datarun_id))

    recorder = Watching()
    driver = Driver(sqlite_hub, reporter=recorder).run()
    assert [r.status for r in driver.results] == ["complete"] * 6
    assert running_at_finish == [1, 1, 1, 1, 1, 0]  # the last one had nothing behind it
    kinds = [e[0] for e in recorder.events if e[0] in ("classifier", "finished")]
    assert kinds == ["classifier", "finished"] * 6
    started = [e[1] for e in recorder.of("classifier")]
    assert started == [e[1] for e in recorder.of("finished")]  # each reported as it starts


def test_failing_fit_is_recorded_and_the_worker_moves_on(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit that raises is `errored` with its traceback; after 4 errors its partition is too."""
    failing = custom_method(tmp_path, monkeypatch, "fails")
    datarun_id = enter(sqlite_hub, pollution_path, methods=[failing, "gnb"], budget=20)
    recorder = Recorder()
    Driver(sqlite_hub, reporter=recorder).run()

    by_method = {hp.id: hp for hp in sqlite_hub.hyperpartitions(datarun_id)}
    classifiers = sqlite_hub.classifiers(datarun_id)
    failed = [c for c in classifiers if by_method[c.hyperpartition_id].method == "fails"]
    good = [c for c in classifiers if by_method[c.hyperpartition_id].method == "gnb"]
    # max_hyperpartition_errors=3: the 4th closes the partition; one more may have been queued
    # in the fit process by then (proposed before that error was recorded)
    assert len(failed) in (4, 5)
    for classifier in failed:
        assert classifier.status == ClassifierStatus.ERRORED
        assert classifier.error_message.startswith("Traceback (most recent call last)")
        assert "ValueError: deliberate failure in fit" in classifier.error_message
        assert classifier.model_location is None and classifier.end_time is not None
    assert [c.status for c in good] == [ClassifierStatus.COMPLETE]
    assert {hp.method: hp.status for hp in by_method.values()} == {
        "fails": HyperpartitionStatus.ERRORED,
        "gnb": HyperpartitionStatus.GRIDDING_DONE,
    }
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    assert sorted(e[2] for e in recorder.of("finished")) == ["complete"] + ["errored"] * len(failed)


def test_values_the_estimator_rejects_are_errors_too(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    """A valid method JSON whose values scikit-learn refuses (max_depth < 1)."""
    method = {
        "name": "bad_tree",
        "class": "sklearn.tree.DecisionTreeClassifier",
        "hyperparameters": {"max_depth": {"type": "int", "range": [-9, -1]}},
        "root_hyperparameters": ["max_depth"],
    }
    path = tmp_path / "bad_tree.json"
    path.write_text(json.dumps(method))
    datarun_id = enter(sqlite_hub, pollution_path, methods=[str(path)], budget=10)
    Driver(sqlite_hub).run()
    classifiers = sqlite_hub.classifiers(datarun_id)
    assert len(classifiers) in (4, 5)  # the 4th error closes it; a 5th may be queued by then
    assert {c.status for c in classifiers} == {ClassifierStatus.ERRORED}
    assert all("max_depth" in c.error_message for c in classifiers)
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE


def test_artifact_store_failure_is_an_error_not_a_success(
    sqlite_url: str, pollution_path: str, tmp_path: Path
) -> None:
    """A model that cannot be stored must not be recorded `complete` (original defect 5).

    The store stays broken, so the worker waits for it (with backoff) and gives up after its
    outage patience with the store's error; the classifier is an infrastructure error.
    """
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the artifact folder should be")
    settings = make_settings(sqlite_url, blocker, artifact_retries=0, outage_patience_seconds=0.5)
    hub = ModelHub(settings=settings)
    try:
        datarun_id = enter(hub, pollution_path, methods=["gnb"], budget=1)
        with pytest.raises(ArtifactStoreError):
            Driver(hub).run()
        [classifier] = hub.classifiers(datarun_id)
        assert classifier.status == ClassifierStatus.ERRORED
        assert classifier.error_kind == ErrorKind.INFRASTRUCTURE
        assert "cannot write" in classifier.error_message
        assert classifier.model_location is None
    finally:
        hub.close()


# -- which datarun, and when to stop --------------------------------------------------------
def test_highest_priority_datarun_first(sqlite_hub: ModelHub, pollution_path: str) -> None:
    low = enter(sqlite_hub, pollution_path, methods=["dt"], budget=2, priority=1)
    high = enter(sqlite_hub, pollution_path, methods=["dt"], budget=2, priority=3)
    recorder = Recorder()
    Driver(sqlite_hub, reporter=recorder).run()
    high_ids = [c.id for c in sqlite_hub.classifiers(high)]
    low_ids = [c.id for c in sqlite_hub.classifiers(low)]
    assert len(high_ids) == len(low_ids) == 2
    assert max(high_ids) < min(low_ids)
    assert [e[1] for e in recorder.of("started")] == [high, low]
    assert [e[1] for e in recorder.of("ended")] == [high, low]


def test_worker_limited_to_given_dataruns(sqlite_hub: ModelHub, pollution_path: str) -> None:
    first = enter(sqlite_hub, pollution_path, methods=["dt"], budget=2, priority=9)
    second = enter(sqlite_hub, pollution_path, methods=["dt"], budget=2)
    Driver(sqlite_hub, datarun_ids=[second]).run()
    assert sqlite_hub.classifiers(first) == []
    assert sqlite_hub.get_datarun(first).status == DatarunStatus.PENDING
    assert statuses(sqlite_hub, second) == ["complete"] * 2


@pytest.mark.slow
def test_walltime_budget_stops_starting_classifiers(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    """A 2-minute walltime budget of which 90 s are already spent: classifiers start only
    before its end; one still fitting at the end is stopped there, not left to finish."""
    datarun_id = enter(sqlite_hub, pollution_path, methods=["dt"], budget_type="walltime", budget=2)
    started = utcnow() - timedelta(seconds=90)
    end = started + timedelta(minutes=2)
    set_datarun(sqlite_hub, datarun_id, status=DatarunStatus.RUNNING, start_time=started)
    recorder = Recorder()
    Driver(sqlite_hub, reporter=recorder).run()
    classifiers = sqlite_hub.classifiers(datarun_id)
    assert any(c.status == ClassifierStatus.COMPLETE for c in classifiers)
    assert all(c.start_time < end for c in classifiers)
    for cut in (c for c in classifiers if c.status != ClassifierStatus.COMPLETE):
        assert cut.status == ClassifierStatus.ERRORED
        assert cut.error_message.startswith("time limit")
    datarun = sqlite_hub.get_datarun(datarun_id)
    assert datarun.status == DatarunStatus.COMPLETE
    assert datarun.end_time < end + timedelta(seconds=10)
    assert recorder.of("ended") == [("ended", datarun_id, "walltime budget has run out")]


@pytest.mark.slow
def test_deadline_stops_the_datarun(sqlite_hub: ModelHub, pollution_path: str) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    datarun_id = enter(sqlite_hub, pollution_path, methods=["dt"], budget=1000, deadline=tomorrow)
    deadline = utcnow() + timedelta(seconds=8)  # moved closer, so the test stays short
    set_datarun(sqlite_hub, datarun_id, deadline=deadline)
    recorder = Recorder()
    Driver(sqlite_hub, reporter=recorder).run()
    classifiers = sqlite_hub.classifiers(datarun_id)
    assert 0 < len(classifiers) < 1000
    assert all(c.start_time < deadline for c in classifiers)
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    assert recorder.of("ended") == [("ended", datarun_id, "the deadline has passed")]


@pytest.mark.slow
def test_total_time_stops_the_worker_not_the_datarun(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    datarun_id = enter(sqlite_hub, pollution_path, methods=["dt"], budget=1000)
    began = time.monotonic()
    Driver(sqlite_hub, total_time=0.1).run()  # 6 seconds
    assert time.monotonic() - began < 60  # stopped long before its 1,000 classifiers
    count = len(sqlite_hub.classifiers(datarun_id))
    assert 0 < count < 1000
    assert sqlite_hub.running_count(datarun_id) == 0
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.RUNNING


# -- interruption and leases ----------------------------------------------------------------
def test_ctrl_c_releases_the_classifier_and_a_restart_continues(
    sqlite_hub: ModelHub,
    pollution_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    method = custom_method(tmp_path, monkeypatch, "interrupts_once")
    datarun_id = enter(sqlite_hub, pollution_path, methods=[method], budget=3)
    (tmp_path / "interrupt.flag").touch()
    settings = sqlite_hub.settings
    flags = ["--database-url", settings.database_url, "--artifact-root", settings.artifact_root]
    assert cli.main(["worker", *flags]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sqlite_hub.classifiers(datarun_id) == []  # released: no running row, budget intact
    assert not (tmp_path / "interrupt.flag").exists()

    Driver(sqlite_hub).run()
    assert statuses(sqlite_hub, datarun_id) == ["complete"] * 3
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE


def test_in_process_interrupt_propagates_after_release(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    method = custom_method(tmp_path, monkeypatch, "interrupts_once")
    datarun_id = enter(sqlite_hub, pollution_path, methods=[method], budget=2)
    (tmp_path / "interrupt.flag").touch()
    with pytest.raises(KeyboardInterrupt):
        Driver(sqlite_hub).run()
    assert sqlite_hub.classifiers(datarun_id) == []


def test_expired_lease_is_rerun_by_the_next_worker(
    sqlite_url: str, pollution_path: str, tmp_path: Path
) -> None:
    """A worker died holding a claim: the next one re-runs it (attempt 2), same values."""
    hub = ModelHub(settings=make_settings(sqlite_url, tmp_path, lease_seconds=0.5))
    try:
        datarun_id = enter(hub, pollution_path, methods=["dt"], budget=3)
        dead = next_claim(hub, datarun_id)  # reserved, then never trained or renewed
        values = hub.get_classifier(dead.classifier_id).hyperparameters_values
        time.sleep(0.6)
        recorder = Recorder()
        Driver(hub, reporter=recorder).run()
        classifiers = hub.classifiers(datarun_id)
        assert [c.status for c in classifiers] == [ClassifierStatus.COMPLETE] * 3
        rerun = hub.get_classifier(dead.classifier_id)
        assert rerun.attempts == 2 and rerun.hyperparameters_values == values
        assert ("classifier", dead.classifier_id, 2) in recorder.events
        assert Path(rerun.model_location).parent.name == "attempt-2"
        assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    finally:
        hub.close()


def test_classifier_lost_too_often_is_recorded_errored(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    datarun_id = enter(sqlite_hub, pollution_path, methods=["dt"], budget=3)
    dead = next_claim(sqlite_hub, datarun_id)
    with sqlite_hub.transaction() as session:
        session.execute(
            update(Classifier)
            .where(Classifier.id == dead.classifier_id)
            .values(attempts=2, lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    Driver(sqlite_hub).run()
    lost = sqlite_hub.get_classifier(dead.classifier_id)
    assert lost.status == ClassifierStatus.ERRORED
    assert lost.error_message.startswith("worker lost")
    assert sorted(statuses(sqlite_hub, datarun_id)) == ["complete", "complete", "errored"]
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE


def test_heartbeat_keeps_a_long_fit_alive(
    sqlite_url: str,
    pollution_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 3-second fit with a 1-second lease is never reclaimed while its worker lives."""
    method = custom_method(tmp_path, monkeypatch, "slow")
    hub = ModelHub(settings=make_settings(sqlite_url, tmp_path, lease_seconds=1.0))
    rival = ModelHub(settings=make_settings(sqlite_url, tmp_path, lease_seconds=1.0))
    try:
        datarun_id = enter(hub, pollution_path, methods=[method], budget=1)
        (tmp_path / "slow.flag").touch()
        stolen = []
        done = threading.Event()

        def try_to_steal() -> None:
            while not done.is_set():
                claim = rival.reclaim_expired(datarun_id)
                if claim is not None:
                    stolen.append(claim)
                time.sleep(0.1)

        thief = threading.Thread(target=try_to_steal)
        thief.start()
        try:
            began = time.monotonic()
            Driver(hub).run()
            elapsed = time.monotonic() - began
        finally:
            done.set()
            thief.join()
        assert elapsed > 2.5  # the fit really outlived the lease several times
        assert stolen == []
        [classifier] = hub.classifiers(datarun_id)
        assert classifier.status == ClassifierStatus.COMPLETE and classifier.attempts == 1
    finally:
        hub.close()
        rival.close()


def test_train_classifier_twice_does_not_redo_the_work(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    """A retried task (Prefect) with the same claim returns the recorded result."""
    datarun_id = enter(sqlite_hub, pollution_path, methods=["dt"], budget=2)
    claim = next_claim(sqlite_hub, datarun_id)
    cache = DataCache()
    first = train_classifier(sqlite_hub, claim, cache)
    stored = sqlite_hub.get_classifier(claim.classifier_id)
    second = train_classifier(sqlite_hub, claim, cache)
    assert (first.status, second.status) == ("complete", "complete")
    again = sqlite_hub.get_classifier(claim.classifier_id)
    assert again.end_time == stored.end_time and again.model_sha256 == stored.model_sha256


@pytest.mark.slow
def test_sigkilled_worker_is_reclaimed(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`atm worker` killed with SIGKILL mid-fit: its lease expires and the work is redone."""
    method = custom_method(tmp_path, monkeypatch, "blocks")
    datarun_id = enter(sqlite_hub, pollution_path, methods=[method], budget=2)
    (tmp_path / "block.flag").touch()
    env = subprocess_env(sqlite_hub, ATM_LEASE_SECONDS="1", PYTHONPATH=str(tmp_path))
    process = subprocess.Popen(
        [str(ATM_BIN), "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 300
        while sqlite_hub.running_count(datarun_id) == 0:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the worker never started a classifier"
            time.sleep(0.1)
        while len(sqlite_hub.classifiers(datarun_id)) < 2:  # the next, queued behind it
            assert time.monotonic() < deadline, "the worker never queued a second classifier"
            time.sleep(0.1)
        first_seen = sqlite_hub.classifiers(datarun_id)
        time.sleep(1.5)  # the heartbeats keep renewing while the fit blocks
        held = sqlite_hub.classifiers(datarun_id)
        for before, after in zip(first_seen, held, strict=True):
            assert after.lease_expires_at > before.lease_expires_at
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    (tmp_path / "block.flag").unlink()

    survivor = ModelHub(settings=make_settings(sqlite_hub.settings.database_url, tmp_path))
    try:
        Driver(survivor).run()
    finally:
        survivor.close()
    classifiers = sqlite_hub.classifiers(datarun_id)
    assert [c.status for c in classifiers] == [ClassifierStatus.COMPLETE] * 2
    assert [sqlite_hub.get_classifier(c.id).attempts for c in held] == [2, 2]
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE


# -- many workers ---------------------------------------------------------------------------
def test_worker_threads_share_a_datarun(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    datarun_id = enter(sqlite_hub, pollution_path, methods=["logreg", "dt"], budget=8)
    recorders = [Recorder(), Recorder()]
    errors: list[BaseException] = []

    def work(recorder: Recorder) -> None:
        hub = ModelHub(settings=make_settings(sqlite_hub.settings.database_url, tmp_path))
        try:
            Driver(hub, reporter=recorder).run()
        except BaseException as exc:  # asserted below
            errors.append(exc)
        finally:
            hub.close()

    threads = [threading.Thread(target=work, args=(r,)) for r in recorders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert statuses(sqlite_hub, datarun_id) == ["complete"] * 8
    assert sum(len(r.of("ended")) for r in recorders) == 1
    assert sum(len(r.of("finished")) for r in recorders) == 8


def run_worker_processes(hub: ModelHub, count: int) -> list[tuple[int, str]]:
    env = subprocess_env(hub)
    processes = [
        subprocess.Popen(
            [str(ATM_BIN), "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(count)
    ]
    results = []
    for process in processes:
        try:
            output, _ = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        results.append((process.returncode, output.decode()))
    return results


def check_shared_datarun(hub: ModelHub, datarun_id: int, budget: int, results) -> None:
    for code, output in results:
        assert code == 0, output[-2000:]
        assert "database is locked" not in output.lower()
        assert "Traceback" not in output
    errors = [c.error_message for c in hub.classifiers(datarun_id) if c.error_message]
    assert statuses(hub, datarun_id) == ["complete"] * budget, errors[:2]
    assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    ended = sum(output.count(f"Datarun {datarun_id} has ended.") for _, output in results)
    assert ended == 1
    frame = pd.read_csv(hub.get_dataset(hub.get_datarun(datarun_id).dataset_id).train_path)
    best = hub.load_model(hub.best_classifier(datarun_id).id)
    assert len(best.predict(frame.drop(columns=["class"]))) == len(frame)


@pytest.mark.slow
def test_worker_processes_on_sqlite_keep_the_budget(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    """Three `atm worker` processes on one SQLite datarun: exactly the budget, no lock errors."""
    datarun_id = enter(sqlite_hub, pollution_path, methods=["logreg", "dt", "knn"], budget=12)
    results = run_worker_processes(sqlite_hub, 3)
    check_shared_datarun(sqlite_hub, datarun_id, 12, results)


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
def test_worker_processes_on_mariadb_keep_the_budget(
    database_url: str, pollution_path: str, tmp_path: Path
) -> None:
    hub = ModelHub(settings=make_settings(database_url, tmp_path))
    try:
        datarun_id = enter(hub, pollution_path, methods=["logreg", "dt", "knn"], budget=9)
        results = run_worker_processes(hub, 3)
        check_shared_datarun(hub, datarun_id, 9, results)
    finally:
        hub.close()


def test_a_seeded_datarun_repeats_its_search(sqlite_hub: ModelHub, pollution_path: str) -> None:
    """The same data, options and seed: the same configurations in the same order (baytune's
    draws come from numpy's global generator, seeded per proposal and restored after it), with
    a selector blind to time. hiercost (the default) also weighs the seconds measured: the
    same seed gives the same warm start (each method's default, in order), and may diverge
    after it."""

    def searched(datarun_id: int) -> list[tuple[int, str]]:
        partitions = {hp.id: i for i, hp in enumerate(sqlite_hub.hyperpartitions(datarun_id))}
        return [
            (partitions[c.hyperpartition_id], json.dumps(c.hyperparameters_values, sort_keys=True))
            for c in sqlite_hub.classifiers(datarun_id)
        ]

    runs = []
    for seed, selector in ((0, "hieralg"), (0, "hieralg"), (1, "hieralg"), (0, "hiercost")):
        datarun_id = enter(sqlite_hub, pollution_path, methods=["logreg", "dt", "knn"], budget=12,
                           seed=seed, selector=selector)  # fmt: skip
        Driver(sqlite_hub, datarun_ids=[datarun_id]).run()
        runs.append(searched(datarun_id))
    assert len(runs[0]) == 12 and runs[0] == runs[1]
    assert runs[2] != runs[0]  # another seed, another search
    assert len(runs[3]) == 12 and runs[3][:3] == runs[0][:3]  # the warm start
    state = np.random.get_state()[1][:4].tolist()
    Driver(
        sqlite_hub, datarun_ids=[enter(sqlite_hub, pollution_path, methods=["dt"], budget=2)]
    ).run()
    assert np.random.get_state()[1][:4].tolist() == state  # left as it was
