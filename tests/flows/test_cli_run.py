"""``atm run``: the flow on Prefect's embedded server from a fresh shell, no Prefect server or
PREFECT_API_URL; bad input is refused in one line before Prefect is even imported."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from atm_core.cli import main
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import DatarunStatus
from atm_core.settings import load_settings
from tests.conftest import DEMO_DATA, MYSQL_URL
from tests.flows.conftest import BIN, subprocess_env

DEMO = DEMO_DATA / "pollution_1.csv"


def atm_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = subprocess_env(
        tmp_path / "prefect-home",
        ATM_DATABASE_URL=f"sqlite:///{tmp_path / 'atm.db'}",
        ATM_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        COLUMNS="200",
    )
    return subprocess.run(
        [str(BIN / "atm"), "run", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_atm_run_trains_the_budget_on_embedded_prefect(tmp_path, pollution_path):
    """Every flag reaches the flow's parameter of the same name (one options spec)."""
    done = atm_run(
        tmp_path, "--train-path", pollution_path, "--methods", "dt", "--budget", "3",
        "--test-size", "0.25", "--seed", "7", "--no-refit",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Datarun 1 leaderboard" in done.stdout
    assert "Datarun 1: complete (3 complete)" in done.stdout
    assert "Traceback" not in done.stderr
    assert "| INFO" not in done.stderr, "embedded runs keep Prefect's run logs quiet by default"
    # embedded: Prefect's own state went to the private home, not to a server
    assert (tmp_path / "prefect-home").is_dir()
    hub = ModelHub(settings=load_settings(database_url=f"sqlite:///{tmp_path / 'atm.db'}"))
    try:
        assert len(hub.classifiers(1)) == 3
        datarun = hub.get_datarun(1)
        assert datarun.status == DatarunStatus.COMPLETE
        assert (datarun.test_size, datarun.seed, datarun.refit) == (0.25, 7, False)
    finally:
        hub.close()


def test_atm_run_refuses_a_missing_file_before_prefect_starts(tmp_path):
    done = atm_run(tmp_path, "--train-path", "missing.csv", "--budget", "3")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("atm run: error:") and "missing.csv" in lines[0]
    assert "Traceback" not in done.stderr
    assert "Starting the atm flow" not in done.stdout
    assert not (tmp_path / "prefect-home").exists(), "Prefect should not have started"
    assert not (tmp_path / "atm.db").exists()


def test_atm_run_refuses_run_per_partition_instead_of_ignoring_it(tmp_path, pollution_path, capsys):
    """The flow searches one datarun; a flag it cannot honour is an error, not a no-op."""
    url = f"sqlite:///{tmp_path / 'atm.db'}"
    argv = ["run", "--database-url", url, "--train-path", pollution_path, "--run-per-partition"]
    assert main(argv) == 2
    assert "does not support --run-per-partition" in capsys.readouterr().err
    assert not (tmp_path / "atm.db").exists()


SECRET = "Kq7-sEcReT-pw9"  # atm_secret's password (infra/test-services.sh)


@pytest.mark.services
def test_atm_run_keeps_the_database_password_out_of_prefect_and_every_file(tmp_path):
    """The flow reads its ModelHub from the environment: no flow-run parameter, task input,
    artifact, log line or ModelHub row holds the password; its output masks it too."""
    url = MYSQL_URL.rsplit("@", 1)[1]
    database = f"mysql://atm_secret:{SECRET}@{url}/atm_secret"
    env = subprocess_env(
        tmp_path / "prefect-home",
        ATM_DATABASE_URL=database,
        ATM_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        COLUMNS="200",
    )
    done = subprocess.run(
        [str(BIN / "atm"), "run", "--train-path", str(DEMO), "--methods", "dt", "--budget", "2",
         "--verbose"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert SECRET not in done.stdout + done.stderr
    holding = [path for path in tmp_path.rglob("*") if path.is_file() and SECRET.encode()
               in path.read_bytes()]  # fmt: skip
    assert holding == [], "the password is written in Prefect's home or the run's files"
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            for table in ("datasets", "dataruns", "hyperpartitions", "classifiers", "ensembles"):
                rows = connection.execute(text(f"SELECT * FROM {table}")).all()
                assert rows or table == "ensembles"
                assert SECRET not in repr(rows), table
            connection.execute(
                text(
                    "DROP TABLE IF EXISTS ensembles, classifiers, "
                    "hyperpartitions, dataruns, datasets, alembic_version"
                )
            )
            connection.commit()
    finally:
        engine.dispose()
