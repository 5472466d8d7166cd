"""Entering a datarun on the dashboard starts the ``atm/datarun`` deployment on a real Prefect
server (over its REST API, with plain HTTP), and a process worker runs that flow run to the
end. Refusals come first and write nothing: no server, no deployment."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from atm_core.dashboard.app import DashboardConfig
from atm_core.dashboard.deployments import PrefectServer
from atm_core.modelhub import ModelHub
from tests.conftest import free_port, make_settings
from tests.dashboard_support import POLLUTION, LiveServer
from tests.flows.test_deployment import Stack

BUDGET = 3


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A Prefect server (and later a worker) of this test, stopped whatever happens."""
    started = Stack(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def prefect_get(stack: Stack, path: str) -> dict:
    with urllib.request.urlopen(f"{stack.api_url}{path}", timeout=10) as answer:
        return json.loads(answer.read())


def enter(live: LiveServer):
    options = {"train_path": POLLUTION, "methods": ["dt"], "budget": BUDGET, "start_flow_run": True}
    return live.post_json("/api/dataruns", options)


def test_entering_a_datarun_starts_the_deployment(stack: Stack, tmp_path: Path):
    stack.server = stack.start(
        "server", "server", "start", "--host", "127.0.0.1", "--port", str(stack.port)
    )
    stack.wait_healthy()
    settings = make_settings(f"sqlite:///{tmp_path / 'atm.db'}", tmp_path)  # the worker's too
    hub = ModelHub(settings=settings)

    unreachable = PrefectServer(f"http://127.0.0.1:{free_port()}/api")
    with LiveServer(DashboardConfig(settings, prefect=unreachable)) as live:
        refused = enter(live)
        assert refused.status == 502
        assert refused.json()["detail"].startswith("cannot reach the Prefect server at http://")

    with LiveServer(DashboardConfig(settings, prefect=PrefectServer(stack.api_url))) as live:
        refused = enter(live)
        assert refused.status == 502
        assert "has no deployment atm/datarun" in refused.json()["detail"]
        assert hub.dataruns() == []  # checked before anything was written

        stack.prefect("work-pool", "create", "atm", "--type", "process")
        stack.prefect("--no-prompt", "deploy", "--all")
        created = enter(live)
        assert created.status == 201, created.body
        answer = created.json()
    datarun_id = answer["datarun_ids"][0]
    [run] = answer["flow_runs"]
    assert run["datarun_id"] == datarun_id and run["deployment"] == "atm/datarun"
    assert run["url"] == f"http://127.0.0.1:{stack.port}/runs/flow-run/{run['id']}"

    deployment = prefect_get(stack, "/deployments/name/atm/datarun")
    flow_run = prefect_get(stack, f"/flow_runs/{run['id']}")
    assert flow_run["deployment_id"] == deployment["id"]
    assert flow_run["parameters"] == {"datarun_id": datarun_id}
    assert flow_run["state"]["type"] == "SCHEDULED"

    stack.worker = stack.start("worker", "worker", "start", "--pool", "atm")
    deadline = time.monotonic() + 240
    while prefect_get(stack, f"/flow_runs/{run['id']}")["state"]["type"] != "COMPLETED":
        state = prefect_get(stack, f"/flow_runs/{run['id']}")["state"]["type"]
        assert state not in ("FAILED", "CRASHED", "CANCELLED"), stack.log("worker")
        assert time.monotonic() < deadline, f"flow run still {state}:\n{stack.log('worker')}"
        time.sleep(2)
    assert hub.get_datarun(datarun_id).status.value == "complete"
    assert len(hub.classifiers(datarun_id)) == BUDGET
    hub.close()
