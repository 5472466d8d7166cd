"""One datarun driver behind every front-end: the same behavioural cases against the CLI
worker's execution (a fit process in the worker) and the flow's (Prefect task runs), on SQLite
and on MariaDB.

* an object-store outage mid-run: the driver waits it out instead of erroring classifier after
  classifier, and removes the files the failed classifier left behind once the store is back;
* Ctrl+C in the middle of a fit: the claim is released (no row, the budget intact);
* two drivers on one datarun: exactly its budget, completed and finalized exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus, ErrorKind
from atm_core.reporting import Reporter
from atm_core.settings import load_settings
from flows import execution
from flows.datarun import datarun
from flows.tasks import train_classifier
from tests.conftest import fresh_database
from tests.flows.conftest import FLAKY, FlakyFileSystem, task_runs
from tests.test_worker import custom_method

FRONT_ENDS = ("worker", "flow")


@pytest.fixture(params=["sqlite", "mariadb"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    with fresh_database(backend, tmp_path) as url:
        yield url


def open_hub(url: str, root: str, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> ModelHub:
    """A hub for the test, and the same settings in ``ATM_*`` for the flow (which reads them
    there)."""
    values = {"database_url": url, "artifact_root": root, "poll_seconds": 0.2, **settings}
    for name, value in values.items():
        monkeypatch.setenv(f"ATM_{name.upper()}", str(value))
    return ModelHub(settings=load_settings())


class Ended(Reporter):
    def __init__(self) -> None:
        self.ended: list[int] = []

    def datarun_ended(self, datarun, reason) -> None:
        self.ended.append(datarun.id)


def drive(front_end: str, hub: ModelHub, datarun_id: int, n_parallel: int = 1) -> dict:
    """Run one front-end's driver on the datarun; what it completed and how it ended."""
    if front_end == "worker":
        reporter = Ended()
        driver = Driver(hub, datarun_ids=[datarun_id], n_parallel=n_parallel, reporter=reporter)
        driver.run()
        return {"completed": driver.completed == {datarun_id}, "finalized": len(reporter.ended)}
    state = datarun(datarun_id=datarun_id, n_parallel=n_parallel, return_state=True)
    summary = state.result()
    runs = task_runs(state.state_details.flow_run_id)
    finalized = sum(name.startswith("finalize") for name in runs)
    return {"completed": summary["completed_now"], "finalized": finalized}


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_a_store_outage_is_waited_out_and_leftovers_are_removed(
    front_end: str,
    database: str,
    tmp_path: Path,
    pollution_path: str,
    flaky_store: type[FlakyFileSystem],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store goes away for 4 s while classifier 3 writes its metrics (its model is already
    written). Classifier 3 is errored as an infrastructure failure; the driver waits for the
    store instead of erroring the classifiers after it; once the store is back, classifier 3's
    model file is removed and the datarun completes with exactly its budget."""
    root = tmp_path / "artifacts"
    hub = open_hub(database, f"{FLAKY}://{root}", monkeypatch, artifact_retries=0)
    # the flow's own retries would outlast the outage: here the driver must do the waiting
    monkeypatch.setattr(execution, "train_classifier", train_classifier.with_options(retries=0))
    try:
        datarun_id = (
            enter_data(hub, DatarunRequest(pollution_path, methods=["dt"], budget=6)).dataruns[0].id
        )
        flaky_store.outage("classifier-3/attempt-1/metrics.parquet", seconds=4)
        outcome = drive(front_end, hub, datarun_id)

        classifiers = {c.id: c for c in hub.classifiers(datarun_id)}
        assert len(classifiers) == 6
        lost = [c for c in classifiers.values() if c.status == ClassifierStatus.ERRORED]
        assert [c.id for c in lost] == [3], [c.error_message for c in lost]
        assert lost[0].error_kind == ErrorKind.INFRASTRUCTURE
        assert flaky_store.injected >= 3  # the write, the removal, and the driver's checks
        assert not list((root / f"datarun-{datarun_id}" / "classifier-3").rglob("*.*"))
        assert all(
            Path(c.model_location.split("://", 1)[1]).is_file()
            for c in classifiers.values()
            if c.status == ClassifierStatus.COMPLETE
        )
        assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
        assert outcome == {"completed": True, "finalized": 1}
    finally:
        hub.close()


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_an_interrupted_fit_releases_its_claim(
    front_end: str,
    database: str,
    tmp_path: Path,
    pollution_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl+C reaches a fit: the driver stops, and the classifier's slot goes back to the
    budget (no running row left for a lease to expire); the next run finishes the datarun."""
    hub = open_hub(database, str(tmp_path / "artifacts"), monkeypatch)
    try:
        method = custom_method(tmp_path, monkeypatch, "interrupts_once")
        datarun_id = (
            enter_data(hub, DatarunRequest(pollution_path, methods=[method], budget=3))
            .dataruns[0]
            .id
        )
        (tmp_path / "interrupt.flag").touch()
        with pytest.raises(KeyboardInterrupt):
            drive(front_end, hub, datarun_id)
        assert hub.classifiers(datarun_id) == []
        assert not (tmp_path / "interrupt.flag").exists()

        drive(front_end, hub, datarun_id)
        assert [c.status for c in hub.classifiers(datarun_id)] == [ClassifierStatus.COMPLETE] * 3
    finally:
        hub.close()


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_two_drivers_spend_the_budget_exactly_and_finalize_once(
    front_end: str,
    database: str,
    tmp_path: Path,
    pollution_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = open_hub(database, str(tmp_path / "artifacts"), monkeypatch)
    try:
        datarun_id = (
            enter_data(hub, DatarunRequest(pollution_path, methods=["dt", "logreg"], budget=8))
            .dataruns[0]
            .id
        )
        outcomes: list[dict] = []
        errors: list[BaseException] = []

        def run() -> None:
            own = ModelHub(settings=hub.settings)  # another driver: its own connections
            try:
                outcomes.append(drive(front_end, own, datarun_id, n_parallel=2))
            except BaseException as exc:  # asserted below
                errors.append(exc)
            finally:
                own.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        classifiers = hub.classifiers(datarun_id)
        assert len(classifiers) == 8
        assert {c.status for c in classifiers} == {ClassifierStatus.COMPLETE}
        assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
        assert sorted(o["completed"] for o in outcomes) == [False, True]
        assert sum(o["finalized"] for o in outcomes) == 1
        assert hub.get_ensemble(datarun_id) is not None
        board = hub.store.load_frame(hub.store.url(f"datarun-{datarun_id}/leaderboard.parquet"))
        assert len(board) == 8
    finally:
        hub.close()
