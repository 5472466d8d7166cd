"""Shared fixtures: demo data, fresh ModelHubs on every supported database, settings.

The ModelHub fixtures talk to real servers: SQLite files, MariaDB and PostgreSQL (started by
``infra/test-services.sh``, which ``make test`` runs first). A server that cannot be reached
fails the tests that need it; nothing is skipped silently.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from atm_core.modelhub import ModelHub
from atm_core.settings import Settings, load_settings

DEMO_DATA = Path(__file__).resolve().parent.parent / "atm_core" / "demo_data"
MYSQL_URL = os.environ.get("ATM_TEST_MYSQL_URL", "mysql+mysqldb://atm_test:atm_test@127.0.0.1:3306")
POSTGRES_URL = os.environ.get(
    "ATM_TEST_POSTGRES_URL", "postgresql+psycopg://atm_test:atm_test@127.0.0.1:5432"
)
BACKENDS = ("sqlite", "mariadb", "postgresql")
REPO = Path(__file__).resolve().parents[1]


SERVICE_FIXTURES = {"s3_server", "s3_root", "s3_hub", "mysql_hub", "private_mariadb"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what ``make test-fast`` leaves out: tests that need a service (MariaDB,
    PostgreSQL, moto's S3 server) and the flow tests (a Prefect server per session)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        backends = {value for value in params.values() if isinstance(value, str)}
        if backends & {"mariadb", "postgresql"} or SERVICE_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.services)
        if "tests/flows/" in item.nodeid:
            item.add_marker(pytest.mark.prefect)


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    """What ``code`` prints in a new interpreter (fresh ``sys.modules``, allocators and
    collector), run from the repository; its stderr is in the failure message."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def pollution_path() -> str:
    """The quickstart dataset: 60 rows, 15 numeric features, binary label ``class``."""
    return str(DEMO_DATA / "pollution_1.csv")


@pytest.fixture
def iris_path() -> str:
    """Iris: 150 rows, 4 numeric features, 3 classes in ``class``."""
    return str(DEMO_DATA / "iris.csv")


@contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """A new, empty database on ``backend``; dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'atm-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"atm_test_{uuid.uuid4().hex[:12]}"
    server = {"mariadb": MYSQL_URL, "postgresql": POSTGRES_URL}[backend]
    admin_db = "/postgres" if backend == "postgresql" else ""
    admin = create_engine(server + admin_db, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # a missing server must fail loudly, never skip
        admin.dispose()
        pytest.fail(f"{backend} at {server} is not reachable (run infra/test-services.sh): {exc}")
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as connection:
            if backend == "postgresql":
                connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:  # fail, rather than wait a year, if a leaked connection holds a lock
                connection.execute(text("SET SESSION lock_wait_timeout = 300"))
                connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh ModelHub database URL, once per supported dialect."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'atm.db'}"


def make_settings(database_url: str, folder: Path, **overrides) -> Settings:
    overrides.setdefault("lease_seconds", 30.0)
    overrides.setdefault("poll_seconds", 0.2)
    return load_settings(
        database_url=database_url, artifact_root=str(folder / "artifacts"), **overrides
    )


@pytest.fixture
def hub(database_url: str, tmp_path: Path) -> Iterator[ModelHub]:
    """A ModelHub on every supported database (sqlite, mariadb, postgresql)."""
    instance = ModelHub(settings=make_settings(database_url, tmp_path))
    yield instance
    instance.close()


@pytest.fixture
def sqlite_hub(sqlite_url: str, tmp_path: Path) -> Iterator[ModelHub]:
    """A ModelHub on a SQLite file, for tests that are not about the database dialect."""
    instance = ModelHub(settings=make_settings(sqlite_url, tmp_path))
    yield instance
    instance.close()


class MotoS3:
    """moto's standalone S3 server on a loopback port, driven like a real object store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """What a client needs (the standard AWS variables only)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> None:
        moto = Path(sys.executable).parent / "moto_server"
        log = (self.folder / f"moto-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers: up
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"moto server did not start on {self.endpoint}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def create_bucket(self) -> str:
        import boto3

        name = f"atm-{uuid.uuid4().hex[:10]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, **_aws_keys())
        client.create_bucket(Bucket=name)
        return name


def _aws_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "region_name": "us-east-1",
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One moto S3 server for the test session, its AWS_* variables set for this process."""
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    server.start()
    patcher = pytest.MonkeyPatch()
    for key, value in server.env().items():
        patcher.setenv(key, value)
    try:
        yield server
    finally:
        patcher.undo()
        server.stop()


@pytest.fixture
def s3_root(s3_server: MotoS3) -> str:
    """An artifact root in a fresh bucket of the session's S3 server."""
    return f"s3://{s3_server.create_bucket()}/artifacts"
