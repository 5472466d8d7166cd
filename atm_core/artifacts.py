"""The artifact store: models as pickles (with their sha256), metrics and predictions as parquet.

Any fsspec URL works as the root: a local folder (the default ``./artifacts``) or
``s3://bucket/prefix`` with endpoint and credentials from the standard ``AWS_*`` variables.
Keys are deterministic per classifier attempt, so a retried upload overwrites its own file
and never leaves an orphan. Local writes go to a temporary name and are renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import pandas as pd

from atm_core.data.loading import parquet_frame
from atm_core.errors import IntegrityError, NotFoundError
from atm_core.retry import retry


class ArtifactStoreError(Exception):
    """The object store failed (after retries): an infrastructure error, not a bad model."""


@dataclass(frozen=True)
class StoredModel:
    location: str
    sha256: str


@dataclass(frozen=True)
class ClassifierFiles:
    """Where one classifier attempt's files went."""

    model: StoredModel
    metrics_location: str
    predictions_location: str | None


def serialize_model(model: Any) -> bytes:
    """Pickle a model and prove the pickle loads again (a model that cannot is not stored)."""
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(blob)
    return blob


class ArtifactStore:
    """Read and write artifacts under one root URL."""

    def __init__(self, root: str, retries: int = 3) -> None:
        self.root = root.rstrip("/")
        self.attempts = retries + 1
        self.fs, self._base = fsspec.core.url_to_fs(self.root)
        self._local = "file" in _protocols(self.fs)
        if self._local:
            # Locations are recorded in the ModelHub: absolute, never relative to a worker's cwd.
            self.root = self._base.rstrip("/") or "/"

    # -- keys -------------------------------------------------------------------------------
    def classifier_prefix(self, datarun_id: int, classifier_id: int, attempt: int) -> str:
        return f"datarun-{datarun_id}/classifier-{classifier_id}/attempt-{attempt}"

    def url(self, key: str) -> str:
        return f"{self.root}/{key}"

    # -- writing ----------------------------------------------------------------------------
    def save_model(self, key: str, blob: bytes) -> StoredModel:
        """Store a pickled model and check that the store holds it byte for byte."""
        return self._save_verified(self.url(key), blob, {})

    def save_classifier_files(
        self, prefix: str, blob: bytes, metrics: pd.DataFrame, predictions: pd.DataFrame | None
    ) -> ClassifierFiles:
        """A classifier attempt's ``model.pkl`` (checked like :meth:`save_model`),
        ``metrics.parquet`` and, when given, ``predictions.parquet`` under ``prefix``, written
        concurrently on an object store.

        Measured by ``benchmarks/store_latency.py`` (S3 on loopback): the model and metrics one
        after the other plus a read-back of the model took 12 ms, this 7 ms; behind a proxy that
        delays every chunk 10 ms each way (a stand-in for a real network), 175 ms and 62 ms.
        """
        beside = {self.url(f"{prefix}/metrics.parquet"): _parquet(metrics)}
        if predictions is not None:
            # Dictionary-encoding unique probabilities gains nothing and, on 33,000 rows, kept
            # 8 MB more in the worker; without it: 1.3 -> 0.9 ms and 59 -> 45 kB on 3,340 rows.
            beside[self.url(f"{prefix}/predictions.parquet")] = _parquet(
                predictions, use_dictionary=["split"]
            )
        stored = self._save_verified(self.url(f"{prefix}/model.pkl"), blob, beside)
        locations = list(beside)
        return ClassifierFiles(stored, locations[0], locations[1] if len(locations) > 1 else None)

    def save_file(self, key: str, data: bytes) -> str:
        """Store ``data`` as it is (a data file uploaded to the dashboard); its location."""
        location = self.url(key)
        self._put_all({location: data})
        return location

    def exists(self, key: str) -> bool:
        path = self._path(self.url(key))
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def save_frame(self, key: str, frame: pd.DataFrame) -> str:
        location = self.url(key)
        self._put_all({location: _parquet(frame)})
        return location

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[IO[bytes]]:
        """A binary file to write ``key`` through (not held in memory whole); it appears
        under ``key`` complete or not at all: locally by a rename, on S3 by the upload's end.
        Not retried (the caller writes again): failures raise :class:`ArtifactStoreError`."""
        path = self._path(self.url(key))
        target = f"{path}.tmp-{uuid.uuid4().hex}" if self._local else path
        try:
            if self._local:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(target, "wb") as handle:
                yield handle
            if self._local:
                self.fs.mv(target, path)
        except Exception as exc:
            if self._local:
                with contextlib.suppress(OSError):
                    self.fs.rm_file(target)
            raise ArtifactStoreError(f"cannot write {self.url(key)}: {exc}") from exc

    def reading(self, key: str) -> IO[bytes] | str:
        """What pyarrow reads ``key`` from: a local path (read natively), or an open file
        of the store; a missing key raises :class:`NotFoundError`."""
        path = self._path(self.url(key))
        if self._local:
            if not self.fs.exists(path):
                raise NotFoundError(f"artifact not found: {self.url(key)}")
            return path
        try:
            return self.fs.open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"artifact not found: {self.url(key)}") from None
        except Exception as exc:
            raise ArtifactStoreError(f"cannot read {self.url(key)}: {exc}") from exc

    def _save_verified(self, location: str, blob: bytes, beside: dict[str, bytes]) -> StoredModel:
        replies = self._put_all({location: blob, **beside})
        digest = hashlib.sha256(blob).hexdigest()
        self._verify(location, blob, digest, replies[0])
        return StoredModel(location, digest)

    def delete_prefix(self, key: str) -> None:
        """Remove everything under ``key`` (a classifier attempt's files); absent is fine."""
        path = self._path(self.url(key))

        def remove() -> None:
            self.fs.invalidate_cache(path)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

        try:
            retry(
                remove,
                retry_on=(OSError, TimeoutError, ConnectionError),
                attempts=self.attempts,
                what=f"deleting {path}",
            )
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise ArtifactStoreError(f"cannot delete {self.url(key)}: {exc}") from exc

    def check(self) -> None:
        """Raise :class:`ArtifactStoreError` unless a small object can be written, read and
        removed (a probe of its own per call: concurrent checkers never read each other's)."""
        payload = uuid.uuid4().hex.encode()
        location = self.url(f".atm-health-{payload.decode()}")
        try:
            path = self._path(location)
            if self._local:
                self.fs.makedirs(self._base, exist_ok=True)
            self.fs.pipe_file(path, payload)
            if self.fs.cat_file(path) != payload:
                raise ArtifactStoreError(f"{location} does not read back what was written")
            self.fs.rm_file(path)
        except ArtifactStoreError:
            raise
        except Exception as exc:
            raise ArtifactStoreError(
                f"the artifact store at {self.root} is unavailable: {exc}"
            ) from exc

    # -- reading ----------------------------------------------------------------------------
    def read_model(self, location: str, sha256: str | None) -> bytes:
        """The pickled model's bytes, refused when they differ from the recorded sha256."""
        blob = self._get(location)
        if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
            raise IntegrityError(
                f"model at {location} does not match the sha256 the ModelHub recorded; "
                "refusing to load it (the file was changed or corrupted)"
            )
        return blob

    def load_frame(self, location: str) -> pd.DataFrame:
        return parquet_frame(self._get(location))

    # -- plumbing ---------------------------------------------------------------------------
    def _path(self, location: str) -> str:
        return fsspec.core.url_to_fs(location)[1]

    def _put_all(self, files: dict[str, bytes]) -> list[object]:
        """Write ``{location: bytes}`` (retried as a whole; every write overwrites), and return
        what the store answered to each: on an async object store, concurrently."""
        paths = {self._path(location): data for location, data in files.items()}

        def write() -> list[object]:
            if not self._local:
                if len(paths) == 1 or not getattr(self.fs, "async_impl", False):
                    return [self.fs.pipe_file(path, data) for path, data in paths.items()]
                return list(self.fs.pipe(paths))
            for path, data in paths.items():
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                temporary = f"{path}.tmp-{uuid.uuid4().hex}"
                self.fs.pipe_file(temporary, data)
                self.fs.mv(temporary, path)
            return [None] * len(paths)

        what = ", ".join(files)
        try:
            return retry(
                write,
                retry_on=(OSError, TimeoutError, ConnectionError),
                attempts=self.attempts,
                what=f"writing {what}",
            )
        except Exception as exc:
            raise ArtifactStoreError(f"cannot write {what}: {exc}") from exc

    def _verify(self, location: str, data: bytes, sha256: str, reply: object) -> None:
        """Prove the store holds ``data`` at ``location``: by the MD5 ETag an S3 PUT answers
        with when it is one (a single-part upload without KMS encryption), else by reading it
        back: a third request per classifier, ~7 ms of moto on loopback, a round trip on S3."""
        etag = reply.get("ETag", "") if isinstance(reply, dict) else ""
        if etag.strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest():
            return
        if hashlib.sha256(self._get(location)).hexdigest() != sha256:
            raise ArtifactStoreError(f"read-back of {location} does not match what was written")

    def _get(self, location: str) -> bytes:
        fs, path = fsspec.core.url_to_fs(location)

        def read() -> bytes:
            return fs.cat_file(path)

        try:
            return retry(
                read,
                retry_on=(TimeoutError, ConnectionError),
                attempts=self.attempts,
                what=f"reading {location}",
            )
        except FileNotFoundError:
            raise NotFoundError(f"artifact not found: {location}") from None
        except Exception as exc:
            raise ArtifactStoreError(f"cannot read {location}: {exc}") from exc


def _parquet(frame: pd.DataFrame, **options: Any) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, **options)
    return buffer.getvalue()


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
