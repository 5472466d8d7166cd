"""Task bodies without Prefect (``task.fn``): each is one call into atm_core and must be safe to
call again, because Prefect retries it with the same arguments."""

from __future__ import annotations

import pytest
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from sqlalchemy.exc import OperationalError

from atm_core.artifacts import ArtifactStoreError
from atm_core.dataruns import DatarunRequest
from atm_core.driver import next_claim
from atm_core.errors import ATMError, ConfigError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus, utcnow
from flows.publish import artifact_key
from flows.runners import make_task_runner
from flows.tasks import (
    enumerate_hyperpartitions,
    finalize_datarun,
    ingest_dataset,
    retry_infrastructure_only,
    train_classifier,
)


def enter(hub: ModelHub, path: str, budget: int = 2, run_key: str = "test-key") -> int:
    request = DatarunRequest(path, methods=["dt"], budget=budget)
    ingested = ingest_dataset.fn(hub.settings, request)
    entered = enumerate_hyperpartitions.fn(
        hub.settings, ingested, run_key=run_key, started_at=utcnow()
    )
    return entered.dataruns[0].id


def test_ingest_is_idempotent_on_content(sqlite_hub, pollution_path):
    """A retried ingest must find the dataset it registered, not add a second one."""
    request = DatarunRequest(pollution_path, methods=["dt"], budget=2)
    first = ingest_dataset.fn(sqlite_hub.settings, request)
    again = ingest_dataset.fn(sqlite_hub.settings, request)
    assert first.dataset_id == again.dataset_id
    assert len(sqlite_hub.datasets()) == 1
    assert first.info.n_examples == 60


def test_enumerate_with_the_same_run_key_finds_its_datarun(sqlite_hub, pollution_path):
    """A retried enumerate (same run key) continues the datarun instead of adding one."""
    first = enter(sqlite_hub, pollution_path)
    again = enter(sqlite_hub, pollution_path)
    other = enter(sqlite_hub, pollution_path, run_key="another-key")
    assert first == again != other
    assert len(sqlite_hub.dataruns()) == 2
    assert sqlite_hub.hyperpartitions(first)


def test_train_then_a_retry_of_the_same_claim_changes_nothing(sqlite_hub, pollution_path):
    """Prefect may run the body twice for one claim: one row, one model, same result."""
    datarun_id = enter(sqlite_hub, pollution_path)
    claim = next_claim(sqlite_hub, datarun_id)
    result = train_classifier.fn(sqlite_hub.settings, claim)
    assert result.status == "complete"
    assert sqlite_hub.load_model(claim.classifier_id) is not None
    again = train_classifier.fn(sqlite_hub.settings, claim)
    assert again.status == "complete"
    rows = sqlite_hub.classifiers(datarun_id)
    assert [c.id for c in rows] == [claim.classifier_id]
    assert rows[0].model_location == result.model_location


def test_a_model_that_fails_to_fit_is_errored_not_raised(sqlite_hub, pollution_path):
    """A bad model returns normally (so it is never retried) and is recorded with its error."""
    datarun_id = enter(sqlite_hub, pollution_path)
    partition = sqlite_hub.hyperpartitions(datarun_id)[0]
    values = {
        "criterion": "gini",
        "max_features": 0.5,
        "max_depth": -3,  # scikit-learn refuses this at fit time
        "min_samples_split": 2,
        "min_samples_leaf": 1,
    }
    claim = sqlite_hub.reserve(datarun_id, partition.id, values)
    result = train_classifier.fn(sqlite_hub.settings, claim)
    assert result.status == "errored"
    row = sqlite_hub.get_classifier(claim.classifier_id)
    assert row.status == ClassifierStatus.ERRORED
    assert "max_depth" in row.error_message
    assert row.model_location is None


def test_finalize_is_safe_to_repeat(sqlite_hub, pollution_path):
    """A retried finalize (after a store fault) keeps the first ensemble and rewrites the same
    leaderboard."""
    datarun_id = enter(sqlite_hub, pollution_path, budget=1)
    train_classifier.fn(sqlite_hub.settings, next_claim(sqlite_hub, datarun_id))
    assert next_claim(sqlite_hub, datarun_id) is None  # the budget is spent
    assert sqlite_hub.finish_if_done(datarun_id)
    first = finalize_datarun.fn(sqlite_hub.settings, datarun_id)
    ensemble = sqlite_hub.get_ensemble(datarun_id)
    again = finalize_datarun.fn(sqlite_hub.settings, datarun_id)
    assert first == again
    assert sqlite_hub.get_ensemble(datarun_id).id == ensemble.id
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    board = sqlite_hub.store.load_frame(first)
    assert list(board["classifier_id"]) == [sqlite_hub.best_classifier(datarun_id).id]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ArtifactStoreError("object store unreachable"), True),
        (ConnectionError("reset by peer"), True),
        (OperationalError("SELECT 1", {}, Exception("database is locked")), True),
        (ConfigError("unknown method 'nope'"), False),
        (ValueError("a bug, not the network"), False),
    ],
)
def test_only_infrastructure_failures_are_retried(error, retried):
    state = Failed(data=error)
    assert retry_infrastructure_only(None, None, state) is retried


def test_task_runner_is_configurable(monkeypatch):
    """The scale-out hook: threads by default, Dask by name or environment."""
    monkeypatch.delenv("ATM_TASK_RUNNER", raising=False)
    monkeypatch.delenv("ATM_DASK_ADDRESS", raising=False)
    assert isinstance(make_task_runner(), ThreadPoolTaskRunner)
    remote = make_task_runner("dask", "tcp://scheduler:8786")
    assert isinstance(remote, DaskTaskRunner)
    assert remote.address == "tcp://scheduler:8786"
    monkeypatch.setenv("ATM_TASK_RUNNER", "dask")
    assert isinstance(make_task_runner(), DaskTaskRunner)
    with pytest.raises(ATMError, match="unknown task runner 'ray'"):
        make_task_runner("ray")


def test_artifact_keys_are_stable_per_datarun():
    assert artifact_key(7, "leaderboard") == "atm-datarun-7-leaderboard"
    assert artifact_key(7, "best-model") == "atm-datarun-7-best-model"
