"""Read a CSV or parquet file from a local path, http(s) or any fsspec URL (s3://...).

A CSV is streamed through pyarrow's CSV reader (:mod:`atm_core.data.arrow_csv`), hashed on
the way; parquet (recognised by its magic bytes) is read whole, as pandas reads it. The frame
of a CSV is kept small: text as pandas categories, integer and float columns in the smallest
type that holds every value exactly (int8..int64; float32 when no value changes), so the
numbers every pipeline converts to float64 (``as_numbers``) are the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import numpy as np
import pandas as pd

from atm_core.errors import DataError

_PARQUET_MAGIC = b"PAR1"
# what fsspec's file systems say of a file's version: local files, S3, http(s)
_VERSION_KEYS = ("mtime", "ETag", "LastModified", "Last-Modified")
# (location, bytes read so far, the file's size or None): called as a CSV is read
ReadProgress = Callable[[str, int, int | None], None]
_progress: ContextVar[ReadProgress | None] = ContextVar("atm_read_progress", default=None)


@dataclass(frozen=True)
class Table:
    """A parsed data file with what identifies its content."""

    location: str
    frame: pd.DataFrame
    sha256: str
    size_bytes: int
    fingerprint: str = ""  # see file_fingerprint: taken before the file was read


@contextlib.contextmanager
def reporting_reads(report: ReadProgress) -> Iterator[None]:
    """Within the block, reading a CSV calls ``report`` after each block of bytes."""
    token = _progress.set(report)
    try:
        yield
    finally:
        _progress.reset(token)


def read_table(location: str, label: str | None = None) -> Table:
    """Read a whole data file; every failure is a ``DataError`` naming the file.

    ``label``: a CSV column kept as parsed (text as strings rather than categories, numbers at
    64 bits), for the label column of a dataset.
    """
    fs, path = _filesystem(location)
    size, fingerprint = _checked_file(fs, path, location)
    with _reading(location):
        with _open(fs, path) as handle:
            head = handle.read(len(_PARQUET_MAGIC))
        if head == _PARQUET_MAGIC:
            raw = fs.cat_file(path)
            frame, sha256, size = _parse_parquet(location, raw), _sha256(raw), len(raw)
        elif not head:
            raise DataError(f"data file is empty: {location}")
        else:
            frame, sha256, size = _parse_csv(location, fs, path, size, label)
            frame = compact(frame, label)
    if frame.shape[1] == 0:
        raise DataError(f"data file has no columns: {location}")
    if len(frame) == 0:
        raise DataError(f"data file has a header but no rows: {location}")
    return Table(location, frame, sha256, size, fingerprint)


def file_fingerprint(location: str) -> str:
    """What tells a changed file from an unchanged one without reading it: its size and
    modification time, or what the server says of its version (ETag, Last-Modified). Every
    failure is a ``DataError`` naming the file, as :func:`read_table`'s."""
    fs, path = _filesystem(location)
    return _checked_file(fs, path, location)[1]


def parquet_frame(raw: bytes) -> pd.DataFrame:
    """A parquet file's rows, as ``pd.read_parquet`` gives them (types, index), read by the
    single-file reader: ``pd.read_parquet`` loads ``pyarrow.dataset`` and its libraries,
    4.4 MB more in every worker for one file."""
    import pyarrow.parquet

    return pyarrow.parquet.ParquetFile(io.BytesIO(raw)).read().to_pandas()


def _filesystem(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(location)
    except (ValueError, ImportError) as exc:
        raise DataError(f"cannot open {location}: {exc}") from exc


def _checked_file(
    fs: fsspec.AbstractFileSystem, path: str, location: str
) -> tuple[int | None, str]:
    """The file's size (None when the server does not say) and fingerprint; a folder is
    refused."""
    with _reading(location):
        if fs.isdir(path):
            raise DataError(f"data path is a folder, not a file: {location}")
        fs.invalidate_cache(path)
        info = fs.info(path)
    size = info.get("size")
    versions = [f"{key}={info[key]}" for key in _VERSION_KEYS if info.get(key) is not None]
    return size, ";".join([f"size={size}", *versions])


@contextlib.contextmanager
def _reading(location: str) -> Iterator[None]:
    """Turn what reading ``location`` raises into a ``DataError`` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"data file not found: {location}") from None
    except DataError:
        raise
    except Exception as exc:  # network, permissions, object store errors
        if "404" in str(exc) or "Not Found" in str(exc):
            raise DataError(f"data file not found: {location}") from None
        raise DataError(f"cannot read {location}: {exc}") from exc


def _open(fs: fsspec.AbstractFileSystem, path: str) -> IO[bytes]:
    """A binary stream of the file; over http one that needs no range requests."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if {"http", "https"} & set(protocols):
        return fs.open(path, "rb", block_size=0)
    return fs.open(path, "rb")


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _parse_parquet(location: str, raw: bytes) -> pd.DataFrame:
    try:
        return parquet_frame(raw)
    except Exception as exc:
        raise DataError(f"cannot parse {location} as parquet: {exc}") from exc


def _parse_csv(
    location: str,
    fs: fsspec.AbstractFileSystem,
    path: str,
    size: int | None,
    label: str | None,
) -> tuple[pd.DataFrame, str, int]:
    """The CSV's frame (pandas' types, text as categories), its sha256 and size in bytes."""
    from atm_core.data import arrow_csv
    from atm_core.memory import configure_allocators

    configure_allocators()  # Arrow on malloc, large blocks mapped: freed memory is given back
    report = _progress.get()
    progress = None if report is None else (lambda done: report(location, done, size))
    opened: list[IO[bytes]] = []

    def open_stream() -> arrow_csv.CheckedStream:
        opened.append(_open(fs, path))
        return arrow_csv.CheckedStream(opened[-1], progress)

    try:
        try:
            frame, stream = arrow_csv.read_frame(open_stream, label)
        except arrow_csv.PandasOnly:
            stream = open_stream()
            frame = arrow_csv.read_pandas(stream, label)
    except arrow_csv.NotUtf8:
        raise DataError(f"cannot parse {location} as CSV: it is not UTF-8 text") from None
    except arrow_csv.BinaryData:
        raise DataError(f"cannot parse {location} as CSV: it contains binary data") from None
    except (arrow_csv.EmptyText, pd.errors.EmptyDataError):
        raise DataError(f"data file is empty: {location}") from None
    except (pd.errors.ParserError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot parse {location} as CSV: {detail}") from None
    finally:
        for handle in opened:
            handle.close()
    return _without_row_index(frame), stream.sha256.hexdigest(), stream.size


def compact(frame: pd.DataFrame, keep: str | None = None) -> pd.DataFrame:
    """``frame`` with its number columns (but ``keep``) in the smallest exact types; column
    by column, so at most one column is copied at a time."""
    for name in frame.columns:
        if name == keep:
            continue
        smaller = _exact_smaller(frame[name])
        if smaller is not None:
            frame[name] = smaller
    return frame


def _exact_smaller(column: pd.Series) -> Any:
    """The column in a smaller type holding the same values, or None."""
    values = column.to_numpy() if column.dtype.kind in "iuf" else None
    if values is None or len(values) == 0:
        return None
    if values.dtype.kind in "iu":
        for candidate in (np.int8, np.int16, np.int32):
            limits = np.iinfo(candidate)
            if values.dtype.itemsize > limits.dtype.itemsize and (
                limits.min <= values.min() and values.max() <= limits.max
            ):
                return values.astype(candidate)
        return None
    if values.dtype == np.float64:
        single = values.astype(np.float32)
        if np.array_equal(single.astype(np.float64), values, equal_nan=True):
            return single
    return None


def _without_row_index(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the row index ``DataFrame.to_csv`` writes by default: it numbers rows, no feature.

    pandas names a first column with an empty header ``Unnamed: 0`` (and so does
    :mod:`atm_core.data.arrow_csv`); when it holds distinct integers it is that index
    (pollution_1.csv has one), and learning from it would only learn the row order.
    """
    first = frame.columns[0] if frame.shape[1] > 1 else None
    if not (isinstance(first, str) and first.startswith("Unnamed: 0")):
        return frame
    column = frame[first]
    if pd.api.types.is_integer_dtype(column) and column.is_unique:
        return frame.drop(columns=[first])
    return frame
