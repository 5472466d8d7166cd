"""Answers the dashboard sends: fast JSON, one-line messages."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


def json_response(data: Any, status_code: int = 200) -> Response:
    """JSON straight from ``json.dumps``: FastAPI's encoder walks every value, which for a
    5,000-classifier page costs more than reading it from the database."""
    body = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    return Response(body, status_code=status_code, media_type="application/json")


def one_line(text: str) -> str:
    """A message as one line, whatever newlines it had."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
