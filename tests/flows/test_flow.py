"""The ``atm`` flow on Prefect's test server: results, UI artifacts, idempotent retries of a
flow run, bad input, several flow runs on one datarun, and the nightly plan."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from uuid import UUID

import pandas as pd
import pytest

from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import next_claim
from atm_core.errors import ATMError
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus
from atm_core.training import DataCache, train_classifier
from flows.datarun import datarun
from flows.nightly import nightly
from tests.flows.conftest import read_artifacts, task_runs


def test_datarun_returns_the_best_model_and_shows_it_in_the_ui(
    sqlite_hub, pollution_path, monkeypatch, caplog
):
    monkeypatch.setenv("ATM_DASHBOARD_URL", "http://atm.internal:8000/")
    state = datarun(
        train_path=pollution_path,
        methods=["logreg", "dt"],
        budget=4,
        n_parallel=2,
        return_state=True,
    )
    assert state.is_completed()
    summary = state.result()
    datarun_id = summary["datarun_id"]
    best = sqlite_hub.best_classifier(datarun_id)
    assert summary["status"] == "complete" and summary["completed_now"] is True
    assert sum(summary["classifiers"].values()) == 4 == len(sqlite_hub.classifiers(datarun_id))
    assert summary["best_classifier_id"] == best.id
    assert summary["best_method"] in ("logreg", "dt")
    assert summary["best_cv"] == best.cv_judgment_metric
    assert summary["best_test"] == best.test_judgment_metric
    assert summary["model_location"] == best.model_location
    assert Path(summary["model_location"]).is_file()
    frame = pd.read_csv(pollution_path)
    assert len(sqlite_hub.load_model(best.id).predict(frame.drop(columns=["class"]))) == 60

    flow_run_id = state.state_details.flow_run_id
    board = read_artifacts(f"atm-datarun-{datarun_id}-leaderboard", flow_run_id)
    assert [a.type for a in board] == ["table"]
    rows = json.loads(board[-1].data)
    assert rows[0]["classifier"] == str(best.id) and rows[0]["rank"] == "1"
    assert len(rows) == summary["classifiers"].get("complete")
    # the table a person reads: 4 decimals, the ranking score then the test score, no column
    # repeating another (the judgment is the CV mean here)
    assert list(rows[0])[:5] == ["rank", "classifier", "method", "f1 (cv)", "test"]
    assert rows[0]["f1 (cv)"] == f"{best.cv_judgment_metric:.4f}"
    assert rows[0]["test"] == f"{best.test_judgment_metric:.4f}"
    assert "cv mean" not in rows[0]
    best_model = read_artifacts(f"atm-datarun-{datarun_id}-best-model", flow_run_id)
    assert best_model[-1].type == "markdown"
    assert f"classifier {best.id}" in best_model[-1].data
    link = f"http://atm.internal:8000/dataruns/{datarun_id}"
    assert f"[The datarun on the dashboard]({link})" in best_model[-1].data
    # the run's last line: the datarun, its best score and ensemble, the dashboard's page
    last = [r.getMessage() for r in caplog.records if r.name == "prefect.flow_runs"][-2]
    assert last.startswith(
        f"datarun {datarun_id} is complete; best f1 {best.cv_judgment_metric:.4f}"
    )
    assert "; ensemble " in last and last.endswith(link)
    progress = read_artifacts(f"atm-datarun-{datarun_id}-progress", flow_run_id)
    assert progress[-1].type == "progress" and progress[-1].data == 100.0
    classifier_runs = [name for name in task_runs(flow_run_id) if name.startswith("classifier")]
    expected = [f"classifier-{c.id}" for c in sqlite_hub.classifiers(datarun_id)]
    assert sorted(classifier_runs) == sorted(expected)


def test_a_retried_flow_run_continues_its_datarun(sqlite_hub, pollution_path):
    """A flow run that died after one classifier is rerun with its run key: same datarun,
    the rest of the budget, no second dataset or datarun."""
    request = DatarunRequest(pollution_path, methods=["dt"], budget=3)
    entered = enter_data(sqlite_hub, request, run_key="nightly-2030-01-01")
    datarun_id = entered.dataruns[0].id
    train_classifier(sqlite_hub, next_claim(sqlite_hub, datarun_id), DataCache())

    summary = datarun(
        train_path=pollution_path,
        methods=["dt"],
        budget=3,
        run_key="nightly-2030-01-01",
    )
    assert summary["datarun_id"] == datarun_id
    again = datarun(
        train_path=pollution_path,
        methods=["dt"],
        budget=3,
        run_key="nightly-2030-01-01",
    )
    assert again["datarun_id"] == datarun_id and again["completed_now"] is False
    assert [d.id for d in sqlite_hub.dataruns()] == [datarun_id]
    assert len(sqlite_hub.datasets()) == 1
    assert len(sqlite_hub.classifiers(datarun_id)) == 3


@pytest.mark.parametrize(
    ("change", "message", "ingested"),
    [
        ({"train_path": "no/such/file.csv"}, "data file not found: /.*/no/such/file.csv", 1),
        (
            {"methods": ["dt", "nope"], "budget": 0, "selector": "best"},
            "unknown method 'nope'.*; unknown selector 'best'.*; "
            "budget must be a whole number of classifiers of at least 1, got 0$",
            0,
        ),
    ],
    ids=["missing-file", "three-bad-options"],
)
def test_bad_input_fails_the_flow_in_one_line_and_writes_nothing(
    sqlite_hub, pollution_path, change, message, ingested
):
    """Options are checked before any task runs, every problem in one line; the data is read
    once (a missing file is not retried)."""
    parameters = {"train_path": pollution_path, "methods": ["dt"], "budget": 2, **change}
    state = datarun(**parameters, return_state=True)
    assert state.is_failed()
    assert re.search(message, state.message) and "\n" not in state.message
    with pytest.raises(ATMError, match=message):
        state.result()
    assert sqlite_hub.datasets() == [] and sqlite_hub.dataruns() == []
    runs = task_runs(state.state_details.flow_run_id)
    ingest = [run for name, (run, _) in runs.items() if name.startswith("ingest")]
    assert [run.run_count for run in ingest] == [1] * ingested, "bad input must not be retried"
    assert not any(name.startswith("classifier") for name in runs)


def test_an_unknown_datarun_id_fails_the_flow_in_one_line(sqlite_hub):
    state = datarun(datarun_id=9999, return_state=True)
    assert state.is_failed()
    assert state.message == "no datarun with id 9999 in the ModelHub"
    assert task_runs(state.state_details.flow_run_id) == {}


def test_two_flow_runs_on_one_datarun_spend_exactly_the_budget(sqlite_hub, pollution_path):
    entered = enter_data(sqlite_hub, DatarunRequest(pollution_path, methods=["dt"], budget=8))
    datarun_id = entered.dataruns[0].id

    def run() -> dict:
        return datarun(datarun_id=datarun_id, n_parallel=2)

    with ThreadPoolExecutor(2) as pool:
        summaries = [future.result() for future in [pool.submit(run), pool.submit(run)]]

    classifiers = sqlite_hub.classifiers(datarun_id)
    assert len(classifiers) == 8
    assert {c.status for c in classifiers} <= {ClassifierStatus.COMPLETE, ClassifierStatus.ERRORED}
    assert sum(c.status == ClassifierStatus.COMPLETE for c in classifiers) >= 1
    assert sqlite_hub.running_count(datarun_id) == 0
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    assert sorted(s["completed_now"] for s in summaries) == [False, True]
    assert {s["datarun_id"] for s in summaries} == {datarun_id}


def test_nightly_runs_every_entry_of_its_plan(sqlite_hub, pollution_path, iris_path, tmp_path):
    """Plan entries take the enter_data options, YAML-typed (an unquoted deadline is a datetime)."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"dataruns:\n"
        f"  - train_path: {pollution_path}\n"
        f"    methods: [dt]\n"
        f"    budget: 2\n"
        f"    test_size: 0.25\n"
        f"  - train_path: {iris_path}\n"
        f"    methods: [dt, knn]\n"
        f"    metric: f1_macro\n"
        f"    budget: 3\n"
        f"    deadline: 2099-01-01 00:00:00\n"
    )
    summaries = nightly(plan=str(plan))
    assert [s["dataset"] for s in summaries] == ["pollution_1", "iris"]
    assert [s["metric"] for s in summaries] == ["f1", "f1_macro"]
    dataruns = sqlite_hub.dataruns()
    assert [d.status for d in dataruns] == [DatarunStatus.COMPLETE] * 2
    assert [len(sqlite_hub.classifiers(d.id)) for d in dataruns] == [2, 3]
    assert [d.test_size for d in dataruns] == [0.25, 0.3]
    assert [d.deadline for d in dataruns] == [None, datetime(2099, 1, 1)]


def test_nightly_refuses_an_option_the_flow_cannot_honour(sqlite_hub, pollution_path, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"dataruns:\n  - train_path: {pollution_path}\n    run_per_partition: true\n")
    with pytest.raises(ATMError, match=r"dataruns\[0\]\.run_per_partition is not supported"):
        nightly(plan=str(plan))
    assert sqlite_hub.dataruns() == []


def test_a_failing_nightly_entry_does_not_stop_the_others(
    sqlite_hub, pollution_path, iris_path, tmp_path
):
    """The first entry names a missing file: the second still runs; the night is reported failed."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"dataruns:\n"
        f"  - train_path: {tmp_path / 'gone.csv'}\n"
        f"  - train_path: {iris_path}\n"
        f"    methods: [knn]\n"
        f"    budget: 2\n"
    )
    state = nightly(plan=str(plan), return_state=True)
    assert state.is_failed()
    assert "1 of 2 nightly dataruns failed" in state.message
    assert "gone.csv" in state.message
    [datarun_row] = sqlite_hub.dataruns()
    assert sqlite_hub.get_dataset(datarun_row.dataset_id).name == "iris"
    assert datarun_row.status == DatarunStatus.COMPLETE
    assert len(sqlite_hub.classifiers(datarun_row.id)) == 2


def test_the_progress_bar_is_updated_at_most_once_a_second_unless_forced(
    sqlite_hub, pollution_path
):
    """Each update costs an API call: a burst of finished classifiers makes one, and the end of
    the search always shows the final count."""
    from prefect import flow
    from prefect.runtime import flow_run

    from flows.publish import ProgressArtifact

    datarun_id = enter_data(sqlite_hub, DatarunRequest(pollution_path, methods=["dt"], budget=3))
    datarun_id = datarun_id.dataruns[0].id
    key = f"atm-datarun-{datarun_id}-progress"

    @flow
    def watch() -> list[str]:
        progress = ProgressArtifact(sqlite_hub, datarun_id)
        seen = []
        progress.update()
        seen.append(read_artifacts(key, UUID(flow_run.id))[-1].description)
        next_claim(sqlite_hub, datarun_id)  # a reserved classifier counts against the budget
        progress.update()  # within the second: skipped
        seen.append(read_artifacts(key, UUID(flow_run.id))[-1].description)
        progress.update(force=True)
        seen.append(read_artifacts(key, UUID(flow_run.id))[-1].description)
        return seen

    first, throttled, forced = watch()
    assert first == throttled == f"Datarun {datarun_id}: 0 of 3 classifiers"
    assert forced == f"Datarun {datarun_id}: 1 of 3 classifiers"
