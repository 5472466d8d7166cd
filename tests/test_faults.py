"""Faults a production setup meets: data a worker cannot read, a ModelHub that cannot be
reached or refuses the login, passwords that must never be printed, custom code a worker
must be allowed to run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from atm_core import cli
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.errors import ATMError, mask_secrets
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus
from tests.conftest import MYSQL_URL, make_settings

ATM = Path(sys.executable).parent / "atm"


def atm(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ATM), *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_relative_train_path_is_stored_absolute(tmp_path: Path, pollution_path: str) -> None:
    """Entered in one folder, worked on from another (or another machine with the same mount)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "poll.csv").write_bytes(Path(pollution_path).read_bytes())
    env = {
        "ATM_DATABASE_URL": f"sqlite:///{tmp_path / 'atm.db'}",
        "ATM_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    entered = atm("enter_data", "--train-path", "poll.csv", "--methods", "dt", "--budget", "2",
                  cwd=tmp_path / "a", env=env)  # fmt: skip
    assert entered.returncode == 0, entered.stderr
    worked = atm("worker", "--quiet", cwd=tmp_path / "b", env=env)
    assert worked.returncode == 0, worked.stderr
    hub = ModelHub(env["ATM_DATABASE_URL"], artifact_root=env["ATM_ARTIFACT_ROOT"])
    try:
        assert hub.get_dataset(1).train_path == str(tmp_path / "a" / "poll.csv")
        assert [c.status for c in hub.classifiers(1)] == [ClassifierStatus.COMPLETE] * 2
    finally:
        hub.close()


def test_data_a_worker_cannot_read_is_left_to_others_never_completed(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    """The file is gone on this worker: no classifier is errored for it, the slot goes back,
    the datarun stays open for a worker that can read it, and this one says why (exit 2)."""
    data = tmp_path / "data.csv"
    data.write_bytes(Path(pollution_path).read_bytes())
    datarun_id = enter_data(sqlite_hub, DatarunRequest(str(data), methods=["dt"], budget=3))
    datarun_id = datarun_id.dataruns[0].id
    data.rename(tmp_path / "moved.csv")
    with pytest.raises(ATMError, match=f"datarun {datarun_id}: this worker cannot read its data"):
        Driver(sqlite_hub).run()
    assert sqlite_hub.classifiers(datarun_id) == []
    assert sqlite_hub.get_datarun(datarun_id).status != DatarunStatus.COMPLETE

    (tmp_path / "moved.csv").rename(data)  # back where it was entered: any worker finishes it
    Driver(sqlite_hub).run()
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE


def test_a_changed_data_file_is_not_trained_on(
    sqlite_hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(Path(pollution_path).read_bytes())
    datarun_id = enter_data(sqlite_hub, DatarunRequest(str(data), methods=["dt"], budget=2))
    datarun_id = datarun_id.dataruns[0].id
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join([*lines, lines[-1]]))  # one more row: other content
    with pytest.raises(ATMError, match="changed since the dataset was registered"):
        Driver(sqlite_hub).run()
    assert sqlite_hub.classifiers(datarun_id) == []


def wrong_password_url(database_url: str) -> str:
    return database_url.replace("atm_test:atm_test@", "atm_test:Wr0ngSecret@")


@pytest.mark.services
@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
@pytest.mark.parametrize("command", [["status"], ["leaderboard", "1"], ["worker"]])
def test_a_wrong_password_is_one_line_exit_2_without_the_password(
    database_url: str, tmp_path: Path, command: list[str]
) -> None:
    """(The test PostgreSQL trusts local logins, so only MariaDB can refuse a password.)"""
    done = atm(*command, "--database-url", wrong_password_url(database_url), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and "Wr0ngSecret" not in done.stderr + done.stdout
    assert done.stderr.startswith(f"atm {command[0]}: error: cannot use the ModelHub at ")
    assert "atm_test:***@127.0.0.1" in done.stderr


def test_an_unreachable_database_is_waited_for_by_a_worker_only(tmp_path: Path) -> None:
    """A server that does not answer may be restarting: a worker waits (the outage patience),
    other commands say so at once."""
    url = MYSQL_URL.rsplit(":", 1)[0] + ":1/atm"  # nothing listens on port 1
    status = atm("status", "--database-url", url, cwd=tmp_path)
    assert status.returncode == 2 and "Waiting" not in status.stdout
    assert "Can't connect" in status.stderr and "atm_test:***@" in status.stderr
    worker = atm("worker", "--database-url", url, cwd=tmp_path,
                 env={"ATM_OUTAGE_PATIENCE_SECONDS": "4"})  # fmt: skip
    assert worker.returncode == 2
    assert worker.stdout.count("Waiting for the ModelHub") == 2  # after 1 s, then 2 s: gone
    assert "atm_test:atm_test@" not in worker.stdout + worker.stderr


def test_a_misplaced_or_mistyped_flag_never_echoes_a_password(tmp_path: Path) -> None:
    url = "mysql://atm:S3cretPass@db.example:3306/atm"
    # before the command: accepted like after it (and so never echoed by argparse)
    before = atm("--database-url", url, "status", cwd=tmp_path)
    assert before.returncode == 2 and "S3cretPass" not in before.stderr
    assert "cannot use the ModelHub at mysql+mysqldb://atm:***@db.example" in before.stderr
    typo = atm("status", "--databse-url", url, cwd=tmp_path)
    assert typo.returncode == 2 and "S3cretPass" not in typo.stderr
    assert "atm:***@db.example" in typo.stderr


@pytest.mark.services
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_unknown_database_is_reported_at_once_even_to_a_worker(
    database_url: str, tmp_path: Path
) -> None:
    url = database_url.rsplit("/", 1)[0] + "/no_such_database"
    done = atm("worker", "--database-url", url, cwd=tmp_path)
    assert done.returncode == 2 and "Waiting" not in done.stdout
    assert 'database "no_such_database" does not exist' in done.stderr
    assert done.stderr.count("\n") == 1


def test_mask_secrets_masks_every_url_password() -> None:
    text = "a postgresql+psycopg://u:p%40ss@h/db and s3://key:secret@bucket/x, not mailto:a@b"
    assert mask_secrets(text) == (
        "a postgresql+psycopg://u:***@h/db and s3://key:***@bucket/x, not mailto:a@b"
    )


def test_a_worker_set_to_refuse_custom_code_leaves_such_dataruns(
    sqlite_url: str, pollution_path: str, tmp_path: Path
) -> None:
    method = tmp_path / "my_tree.json"
    method.write_text(
        json.dumps(
            {
                "name": "my_tree",
                "class": "tests.test_faults.MyTree",
                "hyperparameters": {"max_depth": {"type": "int", "range": [1, 5]}},
                "root_hyperparameters": ["max_depth"],
            }
        )
    )
    refusing = ModelHub(settings=make_settings(sqlite_url, tmp_path, custom_code="refuse"))
    try:
        custom = enter_data(refusing, DatarunRequest(pollution_path, methods=[str(method)],
                                                     budget=2)).dataruns[0].id  # fmt: skip
        plain = enter_data(refusing, DatarunRequest(pollution_path, methods=["dt"], budget=2))
        plain = plain.dataruns[0].id
        with pytest.raises(ATMError, match=r"tests\.test_faults\.MyTree.*ATM_CUSTOM_CODE=refuse"):
            Driver(refusing).run()
        assert refusing.classifiers(custom) == []
        assert refusing.get_datarun(plain).status == DatarunStatus.COMPLETE
    finally:
        refusing.close()
    allowing = ModelHub(settings=make_settings(sqlite_url, tmp_path))
    try:
        Driver(allowing, datarun_ids=[custom]).run()
        assert allowing.get_datarun(custom).status == DatarunStatus.COMPLETE
    finally:
        allowing.close()


def test_cli_main_reports_a_database_lost_mid_command(tmp_path: Path, capsys) -> None:
    """A corrupt SQLite file: the driver's error in one line, exit 2."""
    bad = tmp_path / "atm.db"
    bad.write_bytes(b"not a database" * 100)
    assert cli.main(["status", "--database-url", f"sqlite:///{bad}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atm status: error: cannot use the ModelHub at sqlite:///")
    assert err.count("\n") == 1


from sklearn.tree import DecisionTreeClassifier as MyTree  # noqa: E402, F401  (the custom class)


class SlowFileSystem(LocalFileSystem):
    """A local folder whose writes hang for a while: a store that accepts and stalls."""

    protocol = ("slow",)

    def __init__(self, **kwargs) -> None:
        super().__init__(auto_mkdir=True, **kwargs)

    def pipe_file(self, path, value, *args, **kwargs) -> None:
        time.sleep(0.8)
        super().pipe_file(path, value, *args, **kwargs)


def test_a_hanging_store_call_is_reported_as_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pandas as pd

    from atm_core import retry
    from atm_core.artifacts import ArtifactStore

    fsspec.register_implementation("slow", SlowFileSystem, clobber=True)
    monkeypatch.setattr(retry, "SLOW_SECONDS", 0.3)
    store = ArtifactStore(f"slow://{tmp_path}/store")
    with caplog.at_level(logging.WARNING, logger="atm_core.retry"):
        store.save_frame("board.parquet", pd.DataFrame({"a": [1]}))
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("still waiting")]
    assert len(waits) == 1 and "writing slow://" in waits[0] and "board.parquet" in waits[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atm_core.retry"):
        ArtifactStore(str(tmp_path / "fast")).save_frame("board.parquet", pd.DataFrame({"a": [1]}))
    assert not caplog.records  # a quick call says nothing
