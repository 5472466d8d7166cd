"""Retry with exponential backoff for infrastructure calls (object store, database), and say
so while one hangs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
SLOW_SECONDS = 10.0  # a store call this long is reported as a wait (then every 30 s)


def retry(
    call: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = 4,
    first_delay: float = 0.5,
    what: str = "operation",
) -> T:
    """Run ``call``; on ``retry_on`` errors wait 0.5 s, 1 s, 2 s... and try again. A call that
    hangs (a store that accepts connections and never answers) is logged as a wait."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            with announce_waits(what):
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


@contextmanager
def announce_waits(what: str) -> Iterator[None]:
    """Log a warning after :data:`SLOW_SECONDS` and every 30 s more while the block runs."""
    done = threading.Event()
    started = time.monotonic()

    def watch() -> None:
        wait = SLOW_SECONDS
        while not done.wait(wait):
            log.warning("still waiting: %s for %.0f s", what, time.monotonic() - started)
            wait = 30.0

    watcher = threading.Thread(target=watch, name="atm-wait", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
