"""Retry with exponential backoff for infrastructure calls (object store, database)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def retry(
    call: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = 4,
    first_delay: float = 0.5,
    what: str = "operation",
) -> T:
    """Run ``call``; on ``retry_on`` errors wait 0.5 s, 1 s, 2 s... and try again."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except retry_on as exc:
            if attempt == attempts:
                raise
            log.warning(
                "%s failed (%s); retry %d/%d in %.1fs", what, exc, attempt, attempts - 1, delay
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
