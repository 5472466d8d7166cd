"""Which task runner spreads the classifier tasks: threads here, or a Dask cluster.

``ATM_TASK_RUNNER=dask`` with ``ATM_DASK_ADDRESS=tcp://scheduler:8786`` sends classifier tasks
to an existing Dask cluster (prefect-dask); without an address a local cluster is started.
"""

from __future__ import annotations

import os

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from atm_core.errors import ConfigError

RUNNERS = ("threads", "dask")


def make_task_runner(kind: str | None = None, address: str | None = None) -> TaskRunner:
    kind = kind or os.environ.get("ATM_TASK_RUNNER", "threads")
    address = address or os.environ.get("ATM_DASK_ADDRESS") or None
    if kind == "threads":
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
