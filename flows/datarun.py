"""The ``atm`` flow: one datarun in four steps — ingest, enumerate, search, finalize.

``prefect deployment run atm/datarun --param train_path=...`` runs it on a work pool;
``atm run --train-path ...`` runs it in-process on Prefect's embedded (ephemeral) server.
Several flow runs may share a datarun (pass ``datarun_id``): the ModelHub is the only
coordination point, so together they spend exactly the budget.

The search is the core's datarun driver (:mod:`atm_core.driver`) with Prefect plugged in: each
classifier is a task run, the completed datarun is finalized by a task run. The parameters are
the datarun options of :mod:`atm_core.options`, with their defaults and help. Where the
ModelHub and the artifacts live comes from the ``ATM_*`` settings of the process that runs
the flow (a worker's environment), never from parameters: Prefect shows parameters to anyone
who can see the run, and a database URL carries a password.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from atm_core import options
from atm_core.dataruns import validate_options
from atm_core.driver import Driver
from atm_core.errors import ATMError, ConfigError
from atm_core.modelhub.models import utcnow
from atm_core.results import summarize
from atm_core.settings import load_settings
from flows.execution import FlowReporter, PrefectExecution
from flows.publish import publish_results, result_line
from flows.runners import make_task_runner
from flows.tasks import enumerate_hyperpartitions, hub_for, ingest_dataset, user_error

FLOW_PARAMETERS = {
    "datarun_id": (
        int | None,
        None,
        "work on this existing datarun instead of creating one (several flow runs can share "
        "one: together they spend exactly its budget)",
    ),
    "n_parallel": (int, 1, "classifier task runs in flight"),
    "run_key": (
        str | None,
        None,
        "names the datarun this run creates; a retried flow run with the same key continues it",
    ),
    "started_at": (
        str | None,
        None,
        "when the walltime budget's clock started (ISO 8601, UTC; default: when this flow run "
        "starts, before it reads the data)",
    ),
}


def _datarun(**arguments: Any) -> Any:
    """Search classifiers for a dataset (or continue datarun ``datarun_id``); returns a summary
    of the datarun and its best model."""
    started_at = arguments.pop("started_at")
    started = datetime.fromisoformat(started_at) if started_at else utcnow()
    datarun_id = arguments.pop("datarun_id")
    n_parallel = arguments.pop("n_parallel")
    run_key = arguments.pop("run_key")
    logger = get_run_logger()
    try:
        settings = load_settings()
        hub = hub_for(settings)
        if datarun_id is None:
            request = options.from_mapping(arguments)
            if not request.train_path:
                raise ConfigError("give train_path (a new datarun) or datarun_id (an existing one)")
            validate_options(request)  # every option problem in one line, before any task
            ingested = ingest_dataset(settings, request, return_state=True).result()
            entered = enumerate_hyperpartitions(
                settings, ingested, run_key=run_key or f"prefect:{flow_run.id}", started_at=started
            )
            datarun_id = entered.dataruns[0].id
        else:
            hub.get_datarun(datarun_id)  # an unknown datarun is a one-line error
        reporter = FlowReporter(settings, datarun_id)
        driver = Driver(
            hub,
            PrefectExecution(settings),
            datarun_ids=[datarun_id],
            n_parallel=n_parallel,
            reporter=reporter,
        ).run()
    except ATMError as exc:
        state = user_error(exc)
        logger.error(state.message)
        return state
    reporter.progress.update(force=True)
    summary = summarize(hub, datarun_id)
    summary.completed_now = datarun_id in driver.completed
    publish_results(hub, summary)
    logger.info(result_line(summary))
    return summary.to_dict()


_datarun.__signature__ = options.parameters(  # type: ignore[attr-defined]
    trailing=[
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default, _) in FLOW_PARAMETERS.items()
    ]
)
_datarun.__doc__ = f"{_datarun.__doc__}\n\n" + options.docstring_arguments(
    {name: text for name, (_, _, text) in FLOW_PARAMETERS.items()}
)
datarun = flow(name="atm", task_runner=make_task_runner(), log_prints=True)(_datarun)
