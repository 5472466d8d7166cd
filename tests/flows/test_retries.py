"""Infrastructure faults in the object store: Prefect retries the classifier task with the same
claim (one row, one model file), and a fault that outlasts the retries errors only that
classifier. The store's own retries are off (``ATM_ARTIFACT_RETRIES=0``) so Prefect does the work.
The fault hits the metrics write, after the model file is stored: a retry must overwrite it, a
final failure must remove it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prefect.states import StateType

from atm_core.data.parsed_cache import parsed_key
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus
from flows.datarun import datarun
from tests.flows.conftest import FLAKY, task_runs

METRICS_OF_CLASSIFIER_1 = "classifier-1/attempt-1/metrics.parquet"


def stored_files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def expected_files(classifiers, summary, hub) -> set[Path]:
    """What the ModelHub points at, and the dataset's parsed copy (at a key derived from its
    content hash): nothing else may be in the store (no orphan, no copy)."""
    dataset = hub.get_dataset(hub.get_datarun(summary["datarun_id"]).dataset_id)
    root = Path(hub.settings.artifact_root)
    locations = [summary["leaderboard_location"]]
    parsed = {root / parsed_key(dataset.content_hash, "train")}
    for c in classifiers:
        if c.status == ClassifierStatus.COMPLETE:
            locations += [c.model_location, c.metrics_location, c.predictions_location]
            if c.final_model_location:  # the refit on every labelled row, at finalize
                locations.append(c.final_model_location)
    return {Path(location.split("://", 1)[1]) for location in locations} | parsed


def run_on_flaky_store(sqlite_hub, pollution_path, budget: int, n_parallel: int = 1):
    root = Path(sqlite_hub.settings.artifact_root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATM_ARTIFACT_ROOT", f"{FLAKY}://{root}")
        state = datarun(
            train_path=pollution_path,
            methods=["dt"],
            budget=budget,
            n_parallel=n_parallel,
            return_state=True,
        )
    assert state.is_completed(), state.message
    return state, state.result(), root


def test_a_transient_store_fault_is_retried_by_prefect(sqlite_hub, pollution_path, flaky_store):
    flaky_store.fail(1, where=METRICS_OF_CLASSIFIER_1)
    state, summary, root = run_on_flaky_store(sqlite_hub, pollution_path, budget=3)
    assert flaky_store.injected == 1

    runs = task_runs(state.state_details.flow_run_id)
    retried, history = runs["classifier-1"]
    assert retried.run_count == 2
    assert retried.state.type == StateType.COMPLETED
    assert "AwaitingRetry" in [s.name for s in history]
    assert all(runs[f"classifier-{i}"][0].run_count == 1 for i in (2, 3))

    classifiers = sqlite_hub.classifiers(summary["datarun_id"])
    assert [c.id for c in classifiers] == [1, 2, 3]
    assert all(c.status == ClassifierStatus.COMPLETE for c in classifiers)
    assert stored_files(root) == expected_files(classifiers, summary, sqlite_hub)
    search_models = [
        p for p in stored_files(root) if p.name == "model.pkl" and "attempt-" in str(p)
    ]
    assert len(search_models) == 3
    assert sqlite_hub.load_model(1) is not None


def test_a_persistent_store_fault_errors_only_its_classifier(
    sqlite_hub, pollution_path, flaky_store
):
    """Four failed writes (first run + 3 retries, ~42 s of backoff) for classifier 1."""
    flaky_store.fail(100, where=METRICS_OF_CLASSIFIER_1)
    state, summary, root = run_on_flaky_store(sqlite_hub, pollution_path, budget=3, n_parallel=2)
    assert flaky_store.injected == 4

    failed, _ = task_runs(state.state_details.flow_run_id)["classifier-1"]
    assert failed.run_count == 4 and failed.state.type == StateType.FAILED

    datarun_id = summary["datarun_id"]
    classifiers = {c.id: c for c in sqlite_hub.classifiers(datarun_id)}
    assert len(classifiers) == 3
    assert classifiers[1].status == ClassifierStatus.ERRORED
    assert "infrastructure failure" in classifiers[1].error_message
    assert classifiers[1].model_location is None
    assert Counter(c.status for c in classifiers.values())[ClassifierStatus.COMPLETE] == 2
    assert not stored_files(root / f"datarun-{datarun_id}" / "classifier-1")
    assert stored_files(root) == expected_files(classifiers.values(), summary, sqlite_hub)
    assert summary["classifiers"] == {"complete": 2, "errored": 1}
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
