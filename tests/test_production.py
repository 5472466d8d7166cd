"""Production backends: models on S3, many workers on MariaDB, crashes and outages.

Everything is real: moto's S3 server on loopback (behind a TCP proxy the test can cut), the
machine's MariaDB or a private MariaDB instance the test restarts, `atm worker` processes
killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
import s3fs

from atm_core.artifacts import ArtifactStore, ArtifactStoreError, serialize_model
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.errors import IntegrityError, NotFoundError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus, ErrorKind
from tests.conftest import MotoS3, free_port, fresh_database, make_settings

pytestmark = pytest.mark.services  # MariaDB, moto S3 and private database servers

ATM = Path(sys.executable).parent / "atm"


# -- helpers ---------------------------------------------------------------------------------
class TcpProxy:
    """Forwards a loopback port to another; ``cut()`` makes the target unreachable at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones (the store 'goes away')."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


class PrivateMariaDB:
    """A MariaDB server of the test's own (own data folder and port), so it can be restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={folder / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            check=True,
            capture_output=True,
        )
        self._command = [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={folder / 'data'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={folder / 'mysqld.sock'}",
            f"--pid-file={folder / 'mysqld.pid'}",
            *user,
        ]

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/atm"

    def start(self) -> None:
        log = (self.folder / "mariadb.log").open("ab")
        self.process = subprocess.Popen(self._command, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("private MariaDB did not start")

    def create_database(self) -> None:
        subprocess.run(
            ["mariadb", "-h127.0.0.1", f"-P{self.port}", "-uroot", "-e", "CREATE DATABASE atm"],
            check=True,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self.process = None


def worker_env(hub: ModelHub, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATM_", "PREFECT_"))}
    env.update(
        ATM_DATABASE_URL=hub.settings.database_url,
        ATM_ARTIFACT_ROOT=hub.settings.artifact_root,
        ATM_POLL_SECONDS="0.2",
        **extra,
    )
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(ATM), "worker"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def wait_all(processes: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def statuses(hub: ModelHub, datarun_id: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for classifier in hub.classifiers(datarun_id):
        counts[classifier.status.value] = counts.get(classifier.status.value, 0) + 1
    return counts


def assert_every_complete_model_loads(hub: ModelHub, datarun_id: int) -> int:
    complete = hub.classifiers(datarun_id, status="complete")
    for classifier in complete:
        assert classifier.model_location.startswith(hub.settings.artifact_root)
        assert hasattr(hub.load_model(classifier.id), "predict")
        assert len(hub.load_metrics(classifier.id)) >= 3
    return len(complete)


def s3_keys(bucket: str) -> list[str]:
    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture
def s3_hub(s3_root: str, tmp_path: Path) -> Iterator[ModelHub]:
    """A SQLite ModelHub whose models and metrics live in a fresh S3 bucket."""
    hub = ModelHub(
        settings=make_settings(f"sqlite:///{tmp_path / 'atm.db'}", tmp_path).replace(
            artifact_root=s3_root
        )
    )
    yield hub
    hub.close()


# -- artifacts --------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["local", "s3"])
def test_artifacts_round_trip(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    root = str(tmp_path / "store") if where == "local" else request.getfixturevalue("s3_root")
    store = ArtifactStore(root)
    blob = serialize_model({"weights": [1, 2, 3]})
    stored = store.save_model("datarun-1/classifier-1/attempt-1/model.pkl", blob)
    assert stored.sha256 == hashlib.sha256(blob).hexdigest()
    assert stored.location.startswith(root)
    assert pickle.loads(store.read_model(stored.location, stored.sha256)) == {"weights": [1, 2, 3]}
    frame = pd.DataFrame({"fold": [0, 1], "f1": [0.5, 0.75]})
    location = store.save_frame("datarun-1/classifier-1/attempt-1/metrics.parquet", frame)
    pd.testing.assert_frame_equal(store.load_frame(location), frame)
    store.check()
    store.delete_prefix("datarun-1/classifier-1/attempt-1")
    with pytest.raises(Exception, match="not found"):
        store.read_model(stored.location, stored.sha256)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_classifier_files_are_written_together_and_checked(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Model, metrics and predictions in one round of writes; on S3 the PUT's MD5 ETag proves
    the model was stored (no read-back), elsewhere it is read back."""
    root = str(tmp_path / "store") if where == "local" else request.getfixturevalue("s3_root")
    store = ArtifactStore(root)
    reads: list[str] = []
    real_get = store._get
    store._get = lambda location: reads.append(location) or real_get(location)  # a spy
    blob = serialize_model({"weights": [1, 2, 3]})
    metrics = pd.DataFrame({"fold": [0, 1], "f1": [0.5, 0.75]})
    predictions = pd.DataFrame({"split": ["cv", "test"], "p0": [0.25, 0.5]})
    files = store.save_classifier_files("datarun-1/attempt-1", blob, metrics, predictions)
    stored = files.model
    assert stored.location == store.url("datarun-1/attempt-1/model.pkl")
    assert files.metrics_location == store.url("datarun-1/attempt-1/metrics.parquet")
    assert files.predictions_location == store.url("datarun-1/attempt-1/predictions.parquet")
    assert reads == ([] if where == "s3" else [stored.location])
    assert pickle.loads(real_get(stored.location)) == {"weights": [1, 2, 3]}
    pd.testing.assert_frame_equal(store.load_frame(files.metrics_location), metrics)
    pd.testing.assert_frame_equal(store.load_frame(files.predictions_location), predictions)
    # a model without predict_proba has no predictions: nothing is written for them
    files = store.save_classifier_files("datarun-1/attempt-2", blob, metrics, None)
    assert files.predictions_location is None
    assert not store.fs.exists(store._path(store.url("datarun-1/attempt-2/predictions.parquet")))


def test_a_store_reply_without_an_md5_etag_is_checked_by_reading_back(s3_root: str) -> None:
    """A multipart or KMS-encrypted upload answers with an ETag that is no MD5: the model is then
    read back, and a store holding other bytes than were written is an error."""
    store = ArtifactStore(s3_root)
    blob = serialize_model(list(range(100)))
    stored = store.save_model("datarun-1/model.pkl", blob)
    multipart = {"ETag": '"0123456789abcdef0123456789abcdef-2"'}
    store._verify(stored.location, blob, stored.sha256, multipart)
    other = serialize_model(list(range(99)))
    with pytest.raises(ArtifactStoreError, match="does not match what was written"):
        store._verify(stored.location, other, hashlib.sha256(other).hexdigest(), multipart)


def test_tampered_model_on_s3_is_refused(s3_hub: ModelHub, pollution_path: str) -> None:
    datarun_id = (
        enter_data(s3_hub, DatarunRequest(pollution_path, methods=["dt"], budget=1)).dataruns[0].id
    )
    from atm_core.driver import Driver

    Driver(s3_hub).run()
    [classifier] = s3_hub.classifiers(datarun_id)
    assert classifier.status == ClassifierStatus.COMPLETE
    assert classifier.model_location.startswith("s3://")
    assert classifier.final_model_location.startswith("s3://")  # the refit on every row
    for location, final in [
        (classifier.model_location, False),
        (classifier.final_model_location, True),
    ]:
        model = s3_hub.load_model(classifier.id, final=final)
        bucket, key = location.removeprefix("s3://").split("/", 1)
        tampered = pickle.dumps(model) + b"tampered"
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=tampered)
        with pytest.raises(IntegrityError, match="sha256"):
            s3_hub.load_model(classifier.id, final=final)
    assert (s3_hub.leaderboard(datarun_id)["model_location"] == classifier.model_location).all()
    keys = s3_keys(bucket)
    assert any(k.endswith(f"datarun-{datarun_id}/leaderboard.parquet") for k in keys)


def test_dataset_read_from_s3(s3_hub: ModelHub, s3_server: MotoS3, iris_path: str) -> None:
    bucket = s3_server.create_bucket()
    boto3.client("s3").upload_file(iris_path, bucket, "data/iris.csv")
    entered = enter_data(
        s3_hub, DatarunRequest(f"s3://{bucket}/data/iris.csv", methods=["knn"], budget=2)
    )
    assert entered.info.n_examples == 150 and entered.info.k_classes == 3
    from atm_core.driver import Driver

    Driver(s3_hub).run()
    assert statuses(s3_hub, entered.dataruns[0].id) == {"complete": 2}


# -- many workers, crashes, outages -----------------------------------------------------------
@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
def test_four_workers_on_mariadb_and_s3_survive_a_sigkill(
    database_url: str, s3_root: str, pollution_path: str, tmp_path: Path
) -> None:
    """4 workers, budget 40, one SIGKILLed mid-run: after its lease expires the others finish.

    Exactly 40 rows, none left running, the datarun ended once, every model loads from S3.
    """
    settings = make_settings(database_url, tmp_path).replace(artifact_root=s3_root)
    hub = ModelHub(settings=settings)
    try:
        datarun_id = (
            enter_data(
                hub,
                DatarunRequest(pollution_path, methods=["logreg", "dt", "knn", "rf"], budget=40),
            )
            .dataruns[0]
            .id
        )
        env = worker_env(hub, ATM_LEASE_SECONDS="3")
        logs = [tmp_path / f"worker-{i}.log" for i in range(4)]
        workers = [start_worker(env, log) for log in logs]
        deadline = time.monotonic() + 90
        while not any(c.host for c in hub.classifiers(datarun_id, status="running")):
            assert time.monotonic() < deadline, "no worker started a classifier"
            time.sleep(0.05)
        time.sleep(1.0)
        workers[0].send_signal(signal.SIGKILL)
        codes = wait_all(workers)
        assert codes[0] == -signal.SIGKILL and codes[1:] == [0, 0, 0], [
            log.read_text()[-1500:] for log in logs
        ]
        output = "".join(log.read_text() for log in logs)
        assert "Traceback" not in output
        counts = statuses(hub, datarun_id)
        assert sum(counts.values()) == 40 and "running" not in counts, counts
        keys = [(c.hyperpartition_id, c.config_key) for c in hub.classifiers(datarun_id)]
        assert len(set(keys)) == 40  # no configuration twice
        assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
        assert output.count(f"Datarun {datarun_id} has ended.") == 1
        assert assert_every_complete_model_loads(hub, datarun_id) == counts.get("complete")
    finally:
        hub.close()


def test_store_outage_mid_run_never_completes_without_a_model(
    pollution_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 unreachable mid-run: nothing is `complete` without its stored model; the worker waits
    for the store and finishes the datarun once it is back."""
    moto = MotoS3(tmp_path)
    moto.start()
    proxy = TcpProxy(moto.port)
    proxy.start()
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()  # this test's own server, not the session's
    try:
        bucket = moto.create_bucket()
        hub = ModelHub(
            settings=make_settings(f"sqlite:///{tmp_path / 'atm.db'}", tmp_path).replace(
                artifact_root=f"s3://{bucket}/run"
            )
        )
        datarun_id = (
            enter_data(hub, DatarunRequest(pollution_path, methods=["dt", "logreg"], budget=24))
            .dataruns[0]
            .id
        )
        env = worker_env(hub, ATM_ARTIFACT_RETRIES="1", **moto.env())
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
        env["AWS_MAX_ATTEMPTS"] = "1"  # botocore would otherwise ride out a short outage itself
        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        deadline = time.monotonic() + 90
        while statuses(hub, datarun_id).get("complete", 0) < 4:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the worker never completed 4 classifiers"
            time.sleep(0.05)
        proxy.cut()
        time.sleep(6)  # the worker fails an upload, records it, and waits for the store
        during = statuses(hub, datarun_id)
        assert worker.poll() is None, log.read_text()[-2000:]
        proxy.start()  # the store is back
        assert wait_all([worker])[0] == 0, log.read_text()[-2000:]
        output = log.read_text()
        assert "Waiting for the ModelHub / artifact store" in output
        counts = statuses(hub, datarun_id)
        assert sum(counts.values()) == 24 and "running" not in counts, counts
        assert counts["complete"] > during.get("complete", 0)
        assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
        assert assert_every_complete_model_loads(hub, datarun_id) == counts["complete"]
        keys = s3_keys(bucket)
        for classifier in hub.classifiers(datarun_id, status="errored"):
            assert classifier.error_kind == ErrorKind.INFRASTRUCTURE
            assert not any(f"classifier-{classifier.id}/" in key for key in keys)
        hub.close()
    finally:
        proxy.cut()
        moto.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_worker_survives_a_database_restart(pollution_path: str, tmp_path: Path) -> None:
    """The ModelHub's server restarts mid-run: the worker waits, reconnects and finishes."""
    server = PrivateMariaDB(tmp_path / "mariadb")
    server.start()
    try:
        server.create_database()
        hub = ModelHub(settings=make_settings(server.url, tmp_path))
        datarun_id = (
            enter_data(hub, DatarunRequest(pollution_path, methods=["dt", "logreg"], budget=30))
            .dataruns[0]
            .id
        )
        log = tmp_path / "worker.log"
        worker = start_worker(worker_env(hub), log)
        deadline = time.monotonic() + 90
        while statuses(hub, datarun_id).get("complete", 0) < 3:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        hub.close()
        server.stop()
        time.sleep(4)
        assert worker.poll() is None, log.read_text()[-2000:]
        server.start()
        assert wait_all([worker])[0] == 0, log.read_text()[-3000:]
        hub = ModelHub(settings=make_settings(server.url, tmp_path))
        counts = statuses(hub, datarun_id)
        assert sum(counts.values()) == 30 and "running" not in counts, counts
        assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
        assert assert_every_complete_model_loads(hub, datarun_id) == counts["complete"]
        hub.close()
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_four_worker_processes_spend_exactly_the_budget(
    backend: str, pollution_path: str, tmp_path: Path
) -> None:
    """4 `atm worker` processes, budget 40: 40 rows, no duplicates, completed once."""
    with fresh_database(backend, tmp_path) as url:
        hub = ModelHub(settings=make_settings(url, tmp_path))
        try:
            datarun_id = (
                enter_data(
                    hub, DatarunRequest(pollution_path, methods=["logreg", "dt", "knn"], budget=40)
                )
                .dataruns[0]
                .id
            )
            logs = [tmp_path / f"w{i}.log" for i in range(4)]
            workers = [start_worker(worker_env(hub), log) for log in logs]
            assert wait_all(workers) == [0, 0, 0, 0], [log.read_text()[-1500:] for log in logs]
            output = "".join(log.read_text() for log in logs)
            assert "database is locked" not in output.lower() and "Traceback" not in output
            classifiers = hub.classifiers(datarun_id)
            assert len(classifiers) == 40
            assert len({(c.hyperpartition_id, c.config_key) for c in classifiers}) == 40
            assert statuses(hub, datarun_id) == {"complete": 40}
            assert output.count(f"Datarun {datarun_id} has ended.") == 1
        finally:
            hub.close()


# -- a store that loses objects ---------------------------------------------------------------
@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
def test_objects_lost_by_the_store_are_found_flagged_and_left_out(
    database_url: str, s3_root: str, pollution_path: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Some classifiers' objects vanish from S3 before the datarun completes: the worker that
    completes it still chooses an ensemble (from the others) and exits 0; `atm verify` flags
    the lost ones, which status and leaderboard show and rankings, ensembles and loading
    leave out; the ensemble that had a lost member is chosen again."""
    from atm_core import cli

    monkeypatch.setenv("COLUMNS", "200")
    settings = make_settings(database_url, tmp_path).replace(artifact_root=s3_root)
    hub = ModelHub(settings=settings)
    bucket = s3_root.split("/")[2]
    client = boto3.client("s3")
    flags = ["--database-url", database_url, "--artifact-root", s3_root]
    try:
        datarun_id = (
            enter_data(hub, DatarunRequest(pollution_path, methods=["logreg", "dt"], budget=8))
            .dataruns[0]
            .id
        )
        assert cli.main(["worker", "--quiet", "--total-time", "0.001", *flags]) == 0
        first = hub.classifiers(datarun_id, status="complete")
        assert first, "the first worker trained nothing"
        gone = first[0]
        client.delete_object(Bucket=bucket, Key=gone.predictions_location.split("/", 3)[3])
        assert cli.main(["worker", "--quiet", *flags]) == 0  # completes: never crashes
        ensemble = hub.get_ensemble(datarun_id)
        assert ensemble is not None and gone.id not in ensemble.weights
        capsys.readouterr()

        # the store loses a member of the ensemble (model) and another classifier (metrics)
        member = next(iter(ensemble.weights))
        other = next(c for c in hub.classifiers(datarun_id, status="complete")
                     if c.id not in (member, gone.id))  # fmt: skip
        client.delete_object(Bucket=bucket, Key=hub.get_classifier(member).model_location
                             .split("/", 3)[3])  # fmt: skip
        client.delete_object(Bucket=bucket, Key=other.metrics_location.split("/", 3)[3])
        assert cli.main(["verify", str(datarun_id), *flags]) == 1
        out = capsys.readouterr().out
        assert f"classifier {member}: artifact not found" in out
        assert f"classifier {other.id}: artifact not found" in out
        assert f"datarun {datarun_id}: its ensemble was chosen again" in out
        lost = {c.id for c in hub.lost_classifiers(datarun_id)}
        assert {member, other.id} <= lost and gone.id in lost  # predictions gone: lost too

        again = hub.get_ensemble(datarun_id)
        assert again is not None and not set(again.weights) & lost
        assert hub.load_ensemble(datarun_id) is not None
        assert hub.best_classifier(datarun_id).id not in lost
        assert not {row["classifier_id"] for row in hub.leaderboard_rows(datarun_id)} & lost
        with pytest.raises(NotFoundError, match="stored files were found lost"):
            hub.load_model(member)
        assert cli.main(["status", *flags]) == 0
        shown = capsys.readouterr().out
        assert f"({len(lost)} lost)" in shown, shown
        assert cli.main(["leaderboard", str(datarun_id), *flags]) == 0
        assert "Files lost (atm verify), left out:" in capsys.readouterr().out
        assert cli.main(["verify", *flags]) == 0  # nothing more to find
    finally:
        hub.close()
