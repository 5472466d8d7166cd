"""Scale-out: the classifier tasks of one flow run on a Dask cluster of worker processes, each
opening its own ModelHub from the Settings it receives; the budget still holds exactly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client, LocalCluster
from prefect_dask import DaskTaskRunner

from atm_core.modelhub.models import ClassifierStatus, DatarunStatus
from flows.datarun import datarun


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


def hubs_opened_by_workers(client: Client) -> dict[str, int]:
    def count() -> int:
        from flows import tasks

        return len(tasks._hubs)

    return client.run(count)


def test_classifier_tasks_run_on_a_dask_cluster(cluster, sqlite_hub, pollution_path):
    runner = DaskTaskRunner(address=cluster.scheduler_address)
    summary = datarun.with_options(task_runner=runner)(
        train_path=pollution_path, methods=["dt"], budget=6, n_parallel=2
    )
    classifiers = sqlite_hub.classifiers(summary["datarun_id"])
    assert len(classifiers) == 6
    assert all(c.status == ClassifierStatus.COMPLETE for c in classifiers)
    assert sqlite_hub.get_datarun(summary["datarun_id"]).status == DatarunStatus.COMPLETE
    with Client(cluster) as client:
        opened = hubs_opened_by_workers(client)
    assert len(opened) == 2 and sum(opened.values()) >= 1, opened
