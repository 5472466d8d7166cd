"""Fixtures for the Prefect flow tests: one test server for the whole run, clean subprocess envs.

Starting Prefect's test harness costs ~10-20 s, so it starts once per session and every flow
test in this folder runs against it. Subprocess tests (CLI, deployment) get an environment of
their own: the harness points this process at its server through a settings context, which a
child process would not see (and must not half-see through leaked ``PREFECT_*`` variables).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

from prefect.testing.utilities import prefect_test_harness

from atm_core.modelhub import ModelHub

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FLAKY = "flaky"


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    """One Prefect test server (temporary SQLite) shared by every test of this folder."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flows read ATM_* settings in-process: short idle waits; leases outlive retry delays."""
    monkeypatch.setenv("ATM_POLL_SECONDS", "0.2")
    monkeypatch.setenv("ATM_LEASE_SECONDS", "60")  # above the longest retry delay (30 s)


@pytest.fixture(autouse=True)
def flows_use_the_test_hub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flows read the ModelHub's location from ``ATM_*`` settings (never from parameters): a
    test with the ``sqlite_hub`` fixture points its flow runs at that hub."""
    if "sqlite_hub" in request.fixturenames:
        hub: ModelHub = request.getfixturevalue("sqlite_hub")
        monkeypatch.setenv("ATM_DATABASE_URL", hub.settings.database_url)
        monkeypatch.setenv("ATM_ARTIFACT_ROOT", hub.settings.artifact_root)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subprocess_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    """This environment without any PREFECT_* or ATM_* variable, plus a private Prefect home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ATM_"))}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


class FlakyFileSystem(LocalFileSystem):
    """A local folder behind a test-only ``flaky://`` protocol whose writes fail on demand.

    ``fail(n, where)`` makes the next ``n`` writes whose path contains ``where`` raise
    ConnectionError: the fault a lost object store raises, before anything is written.
    ``outage(trigger, seconds)``: the first write whose path contains ``trigger`` starts an
    outage of ``seconds`` during which every write and delete fails (that write included).
    """

    protocol = (FLAKY,)
    _lock = threading.Lock()
    _remaining = 0
    _where = ""
    _trigger: str | None = None
    _outage_seconds = 0.0
    _outage_until = 0.0
    injected = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(auto_mkdir=True, **kwargs)

    @classmethod
    def fail(cls, times: int, where: str = "") -> None:
        with cls._lock:
            cls._remaining, cls._where, cls.injected = times, where, 0
            cls._trigger, cls._outage_until = None, 0.0

    @classmethod
    def outage(cls, trigger: str, seconds: float) -> None:
        with cls._lock:
            cls._trigger, cls._outage_seconds, cls.injected = trigger, seconds, 0

    @classmethod
    def _fault(cls, path: str, what: str) -> None:
        with cls._lock:
            now = time.monotonic()
            if cls._trigger is not None and what == "writing" and cls._trigger in path:
                cls._trigger, cls._outage_until = None, now + cls._outage_seconds
            if now < cls._outage_until:
                cls.injected += 1
                raise ConnectionError(f"injected outage {what} {path}")
            if what == "writing" and cls._remaining > 0 and cls._where in path:
                cls._remaining -= 1
                cls.injected += 1
                raise ConnectionError(f"injected fault writing {path}")

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        FlakyFileSystem._fault(path, "writing")
        super().pipe_file(path, value, *args, **kwargs)

    def rm(self, path: Any, *args: Any, **kwargs: Any) -> None:
        FlakyFileSystem._fault(str(path), "deleting")
        super().rm(path, *args, **kwargs)


@pytest.fixture
def flaky_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyFileSystem]]:
    """Register ``flaky://``; the store gets no retries of its own, so Prefect must retry."""
    fsspec.register_implementation(FLAKY, FlakyFileSystem, clobber=True)
    monkeypatch.setenv("ATM_ARTIFACT_RETRIES", "0")
    FlakyFileSystem.fail(0)
    yield FlakyFileSystem
    FlakyFileSystem.fail(0)


def read_artifacts(key: str, flow_run_id: Any) -> list[Any]:
    """The versions of artifact ``key`` one flow run made, oldest first, through the Prefect API.

    Keys name a datarun id, and every test's ModelHub starts at datarun 1 on the one test
    server: the flow run tells this test's versions from the others'.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    mine = [artifact for artifact in found if artifact.flow_run_id == flow_run_id]
    return sorted(mine, key=lambda artifact: artifact.created)


def task_runs(flow_run_id: Any) -> dict[str, Any]:
    """The task runs of one flow run by name, each with its state history (``states``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        return {run.name: (run, client.read_task_run_states(run.id)) for run in runs}
