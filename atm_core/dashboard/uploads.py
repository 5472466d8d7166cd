"""Request bodies the dashboard accepts: JSON, or a CSV/parquet file, size-limited; never a
pickle (a body is only ever parsed as JSON, CSV or parquet).

An uploaded data file for a new datarun is kept in the artifact store under
``uploads/<sha256 prefix>/<file name>``, where every worker can read it, as the dataset's
``train_path``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from atm_core.errors import ConfigError

JSON = "json"
FILE = "file"
FILE_TYPES = {
    "text/csv",
    "application/csv",
    "application/octet-stream",
    "application/vnd.apache.parquet",
    "application/x-parquet",
}


def body_kind(request: Request) -> str:
    """``json`` or ``file`` by Content-Type; anything else is refused (415)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        return JSON
    if media in FILE_TYPES:
        return FILE
    raise HTTPException(
        415,
        f"unsupported content type '{media or 'none'}': send JSON (application/json) or a CSV "
        "or parquet file (text/csv, application/octet-stream)",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        413, f"upload too large: more than {limit / 2**20:g} MB (the dashboard's --max-upload-mb)"
    )


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except ValueError as exc:
        raise ConfigError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("the request body must be a JSON object")
    return value


def safe_name(name: str | None, default: str = "upload.csv") -> str:
    """A file name without folders or odd characters (it becomes the dataset's name)."""
    base = Path(str(name or "")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:100]
    return cleaned or default


def upload_key(data: bytes, filename: str) -> str:
    return f"uploads/{hashlib.sha256(data).hexdigest()[:16]}/{safe_name(filename)}"


def read_frame(data: bytes, filename: str) -> Any:
    """Parse an uploaded CSV or parquet file as ``atm_core.data.loading`` parses data files
    (the same row index and encoding rules); errors name the upload, not a temporary path."""
    from atm_core.data.loading import read_table
    from atm_core.errors import DataError

    name = safe_name(filename)
    with tempfile.TemporaryDirectory(prefix="atm-upload-") as folder:
        path = str(Path(folder) / name)
        Path(path).write_bytes(data)
        try:
            return read_table(path).frame
        except DataError as exc:
            raise DataError(str(exc).replace(path, name)) from None
