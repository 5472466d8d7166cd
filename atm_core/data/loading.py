"""Read a CSV or parquet file from a local path, http(s) or any fsspec URL (s3://...)."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

import fsspec
import pandas as pd

from atm_core.errors import DataError

_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Table:
    """A parsed data file with what identifies its content."""

    location: str
    frame: pd.DataFrame
    sha256: str
    size_bytes: int


def read_table(location: str) -> Table:
    """Read a whole data file; every failure is a ``DataError`` naming the file."""
    raw = _read_bytes(location)
    if not raw.strip():
        raise DataError(f"data file is empty: {location}")
    frame = _parse(location, raw)
    if frame.shape[1] == 0:
        raise DataError(f"data file has no columns: {location}")
    if len(frame) == 0:
        raise DataError(f"data file has a header but no rows: {location}")
    return Table(location, frame, hashlib.sha256(raw).hexdigest(), len(raw))


def _read_bytes(location: str) -> bytes:
    try:
        fs, path = fsspec.core.url_to_fs(location)
    except (ValueError, ImportError) as exc:
        raise DataError(f"cannot open {location}: {exc}") from exc
    try:
        if fs.isdir(path):
            raise DataError(f"data path is a folder, not a file: {location}")
        return fs.cat_file(path)
    except FileNotFoundError:
        raise DataError(f"data file not found: {location}") from None
    except DataError:
        raise
    except Exception as exc:  # network, permissions, object store errors
        if "404" in str(exc) or "Not Found" in str(exc):
            raise DataError(f"data file not found: {location}") from None
        raise DataError(f"cannot read {location}: {exc}") from exc


def parquet_frame(raw: bytes) -> pd.DataFrame:
    """A parquet file's rows, as ``pd.read_parquet`` gives them (types, index), read by the
    single-file reader: ``pd.read_parquet`` loads ``pyarrow.dataset`` and its libraries,
    4.4 MB more in every worker for one file."""
    import pyarrow.parquet

    return pyarrow.parquet.ParquetFile(io.BytesIO(raw)).read().to_pandas()


def _parse(location: str, raw: bytes) -> pd.DataFrame:
    if raw[:4] == _PARQUET_MAGIC:
        try:
            return parquet_frame(raw)
        except Exception as exc:
            raise DataError(f"cannot parse {location} as parquet: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"cannot parse {location} as CSV: it is not UTF-8 text") from None
    if "\x00" in text:
        raise DataError(f"cannot parse {location} as CSV: it contains binary data")
    try:
        frame = pd.read_csv(io.StringIO(text))  # cells exactly as written: " a " stays " a "
    except pd.errors.EmptyDataError:
        raise DataError(f"data file is empty: {location}") from None
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot parse {location} as CSV: {detail}") from None
    return _without_row_index(frame)


def _without_row_index(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the row index ``DataFrame.to_csv`` writes by default: it numbers rows, no feature.

    pandas names a first column with an empty header ``Unnamed: 0``; when it holds distinct
    integers it is that index (pollution_1.csv has one), and learning from it would only learn
    the row order.
    """
    first = frame.columns[0] if frame.shape[1] > 1 else None
    if not (isinstance(first, str) and first.startswith("Unnamed: 0")):
        return frame
    column = frame[first]
    if pd.api.types.is_integer_dtype(column) and column.is_unique:
        return frame.drop(columns=[first])
    return frame
