"""The datarun's Prefect tasks: each body is one call into ``atm_core``.

Only infrastructure failures (database, object store, network) are retried, with backoff; a
model that fails to fit is recorded as ``errored`` by the core and returns normally, so it is
never retried. A retried ``train`` reuses its claim: same classifier row, same artifact keys.
A user's error (a missing file, an unknown method) ends its task as ``Failed`` with the
one-line message, without a traceback.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger
from prefect.states import Failed, State

from atm_core import results
from atm_core.dataruns import DatarunRequest, EnteredData, Ingested, create_dataruns, ingest
from atm_core.errors import ATMError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.claims import Claim
from atm_core.reporting import ClassifierResult, Reporter
from atm_core.settings import Settings
from atm_core.training import DataCache, is_infrastructure_error
from atm_core.training import train_classifier as core_train_classifier

RETRY_DELAYS = [2, 10, 30]
_hubs: dict[Settings, ModelHub] = {}
_hubs_lock = threading.Lock()
_cache = DataCache()


def hub_for(settings: Settings) -> ModelHub:
    """One ModelHub (engine pool, artifact store) per process and settings."""
    with _hubs_lock:
        if settings not in _hubs:
            _hubs[settings] = ModelHub(settings=settings)
        return _hubs[settings]


def data_cache() -> DataCache:
    """This process's data cache. Task bodies look it up by name: a task shipped to a Dask
    worker is pickled by value with the globals it uses, and a DataCache holds a lock."""
    return _cache


def retry_infrastructure_only(task_: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry a lost database or object store, never a bad input."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:
        error = exc
    return is_infrastructure_error(error)


def user_error(error: ATMError) -> State:
    """A task or flow run that ends on a user's error: ``Failed`` with its one-line message
    (and the exception, which ``state.result()`` raises), instead of a logged traceback."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return Failed(message=message, data=error)


def run_logger() -> Any:
    """The task run's logger; a plain logger when a task body runs outside Prefect (``.fn``)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("atm.flows")


class RunLogReporter(Reporter):
    """Worker events as Prefect run logs (what ``atm worker`` prints)."""

    def classifier_started(self, claim: Claim, method: str, values: dict[str, Any]) -> None:
        shown = ", ".join(f"{name}={value}" for name, value in sorted(values.items()))
        run_logger().info("classifier %d: %s(%s)", claim.classifier_id, method, shown)


@task(
    name="ingest",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_infrastructure_only,
)
def ingest_dataset(settings: Settings, request: DatarunRequest) -> Ingested | State:
    """Read the data, compute its metadata, register the dataset (same content: same dataset)."""
    try:
        return ingest(hub_for(settings), request)
    except ATMError as exc:
        return user_error(exc)


@task(
    name="enumerate",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_infrastructure_only,
)
def enumerate_hyperpartitions(
    settings: Settings, ingested: Ingested, run_key: str, started_at: datetime
) -> EnteredData:
    """Create the datarun and its hyperpartitions (found again when the flow run is retried);
    its walltime clock runs from ``started_at``."""
    return create_dataruns(hub_for(settings), ingested, run_key=run_key, started_at=started_at)


@task(
    name="classifier",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_infrastructure_only,
    task_run_name="classifier-{claim.classifier_id}",
)
def train_classifier(settings: Settings, claim: Claim) -> ClassifierResult:
    """Train, score and store one reserved classifier."""
    return core_train_classifier(hub_for(settings), claim, data_cache(), RunLogReporter())


@task(
    name="finalize",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_infrastructure_only,
)
def finalize_datarun(settings: Settings, datarun_id: int) -> str:
    """A datarun this flow run completed: choose its ensemble, store its leaderboard (safe to
    repeat). Returns the leaderboard's location."""
    return results.finalize(hub_for(settings), datarun_id)
