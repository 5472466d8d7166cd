"""The deployments of prefect.yaml on a real Prefect server, work pool and process worker.

Everything runs as a separate process with its own environment (PREFECT_HOME in tmp, the
server's URL; the ModelHub and artifact root handed to the worker, hence to its flow runs) and is
stopped in teardown whatever happened: the worker with two SIGINTs (that is how a Prefect worker
exits), the server with SIGTERM, both with SIGKILL as a last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from atm_core import options
from tests.flows.conftest import BIN, REPO, free_port, subprocess_env

BUDGET = 5


class Stack:
    """Processes started for one test, each in its own session so signals reach only them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = subprocess_env(
            folder / "prefect-home",
            PREFECT_API_URL=self.api_url,
            PREFECT_WORKER_QUERY_SECONDS="2",
            # the server streams run logs, so `deployment run --watch` shows them (as
            # infra/stack.sh configures it)
            PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED="true",
            PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED="true",
            ATM_DATABASE_URL=f"sqlite:///{folder / 'atm.db'}",
            ATM_ARTIFACT_ROOT=str(folder / "artifacts"),
            ATM_POLL_SECONDS="0.5",
        )
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [str(BIN / "prefect"), *args],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(BIN / "prefect"), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.server.poll() is None, f"server exited:\n{self.log('server')}"
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"Prefect server not healthy after {timeout} s:\n{self.log('server')}")

    def stop(self) -> None:
        stop(self.worker, [signal.SIGINT, signal.SIGINT, signal.SIGTERM])
        stop(self.server, [signal.SIGTERM, signal.SIGINT])


def stop(process: subprocess.Popen | None, signals: list[int], wait: float = 10) -> None:
    """Signal the process group of ``process`` until it exits; SIGKILL if it never does."""
    if process is None or process.poll() is not None:
        return
    for number in signals:
        try:
            os.killpg(process.pid, number)
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=wait)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path)
    try:
        yield started
    finally:
        started.stop()
    assert started.worker is None or started.worker.poll() is not None
    assert started.server is None or started.server.poll() is not None


async def read_back(datarun_id: int) -> tuple[list, list, object, object]:
    """Through the API: the datarun deployment's flow runs, its leaderboard, the nightly."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("atm/datarun")
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
        board = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"atm-datarun-{datarun_id}-leaderboard"])
            )
        )
        nightly = await client.read_deployment_by_name("atm/nightly")
    return runs, board, nightly, deployment


def test_datarun_deployment_runs_on_a_process_worker(stack: Stack, pollution_path: str):
    stack.server = stack.start(
        "server", "server", "start", "--host", "127.0.0.1", "--port", str(stack.port)
    )
    stack.wait_healthy()
    stack.prefect("work-pool", "create", "atm", "--type", "process")
    stack.prefect("--no-prompt", "deploy", "--all")
    stack.worker = stack.start("worker", "worker", "start", "--pool", "atm")

    run = subprocess.run(
        [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "atm/datarun",
            "--param",
            f"train_path={pollution_path}",
            "--param",
            f"budget={BUDGET}",
            "--watch",
            "--watch-timeout",
            "240",
        ],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nworker:\n{stack.log('worker')}"
    assert "Completed" in run.stdout

    with sqlite3.connect(stack.folder / "atm.db") as db:
        dataruns = db.execute("select id, status from dataruns").fetchall()
        statuses = db.execute("select status from classifiers").fetchall()
    assert len(dataruns) == 1 and dataruns[0][1].lower() == "complete"
    assert len(statuses) == BUDGET
    assert {s.lower() for (s,) in statuses} <= {"complete", "errored"}
    assert list((stack.folder / "artifacts").rglob("model.pkl"))

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        runs, board, nightly, deployment = asyncio.run(read_back(dataruns[0][0]))
    assert [r.state.type.value for r in runs] == ["COMPLETED"]
    assert runs[0].parameters["budget"] == BUDGET
    assert [a.type for a in board] == ["table"]
    assert json.loads(board[0].data)[0]["rank"] == "1"
    # the watch ends with the flow's result line, after the classifiers' lines
    assert f"datarun {dataruns[0][0]} is complete; best f1 " in run.stdout, run.stdout
    # the run form shows every datarun option with its default and help (from one spec)
    schema = deployment.parameter_openapi_schema["properties"]
    for item in options.spec():
        assert schema[item.name].get("default") == item.default, item.name
        assert schema[item.name]["description"] == item.metadata["help"], item.name
    assert "database_url" not in schema and "artifact_root" not in schema
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.schedules[0].schedule.timezone == "UTC" and nightly.schedules[0].active
    assert nightly.parameters == {"plan": "flows/nightly.yaml"}
