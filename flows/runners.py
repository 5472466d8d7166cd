"""Which task runner spreads the classifier tasks: threads here, or a Dask cluster.

``ATM_TASK_RUNNER=dask`` with ``ATM_DASK_ADDRESS=tcp://scheduler:8786`` sends classifier tasks
to an existing Dask cluster (prefect-dask); without an address a local cluster is started.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from atm_core.errors import ConfigError

if TYPE_CHECKING:  # Prefect is imported on use: `atm` imports RUNNERS before Prefect's settings
    from prefect.task_runners import TaskRunner

RUNNERS = ("threads", "dask")


def make_task_runner(kind: str | None = None, address: str | None = None) -> TaskRunner:
    kind = kind or os.environ.get("ATM_TASK_RUNNER", "threads")
    address = address or os.environ.get("ATM_DASK_ADDRESS") or None
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ConfigError(
                "the dask task runner needs prefect-dask: pip install 'atm-prefect[dask]'"
            ) from exc
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"processes": True, "threads_per_worker": 1})
    raise ConfigError(f"unknown task runner '{kind}': use one of {', '.join(RUNNERS)}")
