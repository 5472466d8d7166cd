"""A registered dataset's parsed rows, kept as parquet in the artifact store: workers read them
instead of parsing the CSV again (2M rows: 1-2 s and the parse's memory, every worker).

* **Where**: ``datasets/<content hash>/parsed-v1/{train,test}.parquet`` under the artifact
  root (a local folder or ``s3://``), a key derived from the dataset's content hash, so the
  ModelHub records nothing more (no migration) and it works wherever the CSV lives (a folder
  workers cannot write, http). ``parsed-v1`` changes when the parsing does.
* **When**: written by ``enter_data`` once the dataset is registered; a worker that finds no
  usable copy reads the CSV (checking its hash as before) and writes it.
* **What is trusted**: the copy's metadata names the content hash it was parsed from (and each
  file's sha256, which must combine into it), and its pages carry checksums. A copy that is
  missing, unreadable, corrupt or of other content is ignored (logged): the CSV is read instead.
* **A changed CSV**: the copy also records the file's fingerprint when it was read (size and
  modification time, or the server's ETag / Last-Modified: one ``stat`` or HEAD request, see
  :func:`atm_core.data.loading.file_fingerprint`). A worker uses the copy only while the file
  still has it; otherwise it reads the file and checks its sha256 as without a copy, so a
  changed file is refused, a missing one is this worker's to skip, and a file only touched
  (same bytes) gets a new copy. Not noticed: new bytes of the same size under the same
  modification time (set back on purpose) -- those rows are still the registered ones.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd

from atm_core.data.loading import Table

if TYPE_CHECKING:
    from atm_core.artifacts import ArtifactStore

FORMAT = "parsed-v1"
ROWS_PER_GROUP = 262_144  # rows converted to Arrow (and written) at a time
_HASH, _SHA256, _SIZE = b"atm.content_hash", b"atm.sha256", b"atm.size_bytes"
_FINGERPRINT = b"atm.fingerprint"
log = logging.getLogger(__name__)


def parsed_key(content_hash: str, part: str) -> str:
    """The store key of a dataset's parsed ``part`` ("train" or "test")."""
    return f"datasets/{content_hash}/{FORMAT}/{part}.parquet"


def keep_parsed(
    store: ArtifactStore, content_hash: str, train: Table, test: Table | None = None
) -> None:
    """Write the dataset's parsed parts unless the store holds them already."""
    for part, table in (("train", train), ("test", test)):
        if table is not None and not _exists(store, parsed_key(content_hash, part)):
            save_parsed(store, content_hash, part, table)


def save_parsed(store: ArtifactStore, content_hash: str, part: str, table: Table) -> bool:
    """Write ``table``'s frame as the parsed ``part``, a slice of rows at a time (never a
    second copy of the data); False, logged, when it cannot be written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = parsed_key(content_hash, part)
    frame = table.frame
    try:
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        schema = schema.with_metadata(
            {
                **(schema.metadata or {}),
                _HASH: content_hash.encode(),
                _SHA256: table.sha256.encode(),
                _SIZE: str(table.size_bytes).encode(),
                _FINGERPRINT: table.fingerprint.encode(),
            }
        )
        with (
            store.writing(key) as handle,
            pq.ParquetWriter(handle, schema, write_page_checksum=True) as writer,
        ):
            for start in range(0, len(frame), ROWS_PER_GROUP):
                rows = frame.iloc[start : start + ROWS_PER_GROUP]
                writer.write_table(pa.Table.from_pandas(rows, schema, preserve_index=False))
    except Exception as exc:  # a cache: the CSV stays readable without it
        log.warning("cannot keep the parsed rows of %s at %s: %s", table.location, key, exc)
        return False
    return True


class ParsedUnreadable(Exception):
    """A parsed copy that failed while its columns were read (a corrupt page, a lost store)."""


class ParsedPart:
    """A part's parsed copy, opened and checked against its content hash; read a column at a
    time (its pages decoded at once took twice the data's memory: 2M rows, +380 MB for a
    186 MB frame). ``sha256``, ``size_bytes`` and ``fingerprint``: the CSV's it was parsed
    from."""

    def __init__(
        self, parquet: Any, source: Any, url: str, sha256: str, size_bytes: int, fingerprint: str
    ) -> None:
        self._parquet = parquet
        self._source = source
        self.url = url
        self.sha256 = sha256
        self.size_bytes = size_bytes
        self.fingerprint = fingerprint

    @property
    def names(self) -> list[str]:
        return list(self._parquet.schema_arrow.names)

    def column(self, name: str) -> pd.Series:
        """One column, as pandas reads it; :class:`ParsedUnreadable` when it cannot be."""
        from atm_core.memory import give_back

        try:
            table = self._parquet.read(columns=[name], use_threads=False)
            column = table.to_pandas(split_blocks=True, self_destruct=True)[name]
        except Exception as exc:
            raise ParsedUnreadable(f"{self.url}: {exc}") from exc
        del table
        give_back(collect=False)
        return column

    def table(self, location: str) -> Table:
        """Every column, as the :class:`Table` ``read_table(location)`` gave."""
        columns = {name: self.column(name) for name in self.names}
        frame = pd.DataFrame(columns, copy=False)
        return Table(location, frame, self.sha256, self.size_bytes, self.fingerprint)

    def close(self) -> None:
        if not isinstance(self._source, str):
            self._source.close()


def open_parsed(store: ArtifactStore, content_hash: str, part: str) -> ParsedPart | None:
    """The parsed ``part`` of the dataset with ``content_hash``, or None when the store holds
    no sound copy of this content (logged unless there is none)."""
    import pyarrow.parquet as pq

    from atm_core.errors import NotFoundError

    key = parsed_key(content_hash, part)
    try:
        source = store.reading(key)
    except NotFoundError:
        return None
    except Exception as exc:
        log.warning("cannot read the parsed rows at %s: %s", store.url(key), exc)
        return None
    try:
        parquet = pq.ParquetFile(source, page_checksum_verification=True)
        metadata = parquet.schema_arrow.metadata or {}
        if metadata.get(_HASH) != content_hash.encode():
            raise ValueError("it was parsed from other content")
        sha256, size = metadata[_SHA256].decode(), int(metadata[_SIZE])
        fingerprint = metadata.get(_FINGERPRINT, b"").decode()
    except Exception as exc:
        log.warning("ignoring the parsed rows at %s: %s", store.url(key), exc)
        if not isinstance(source, str):
            source.close()
        return None
    return ParsedPart(parquet, source, store.url(key), sha256, size, fingerprint)


def load_parsed(store: ArtifactStore, content_hash: str, part: str, location: str) -> Table | None:
    """The parsed ``part`` as a :class:`Table` (``location``: its file, for messages), or
    None when the store holds no sound copy of this content."""
    parsed = open_parsed(store, content_hash, part)
    if parsed is None:
        return None
    try:
        return parsed.table(location)
    except ParsedUnreadable as exc:
        log.warning("ignoring the parsed rows at %s", exc)
        return None
    finally:
        parsed.close()


def _exists(store: ArtifactStore, key: str) -> bool:
    try:
        return store.exists(key)
    except Exception:
        return False
