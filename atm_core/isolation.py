"""Run one fit in a forked child process, so that a time limit can stop it.

``timeout_seconds``-style limits cannot interrupt a scikit-learn fit running in the worker's own
process; a child process can simply be killed. The child is forked (the data already loaded in
the worker is shared copy-on-write, nothing is pickled on the way in) and sends back only the
result: the pickled model and its scores. A child that dies (out of memory, a crash in native
code) costs one classifier, not the worker. The worker process itself never fits a model, so
no OpenMP thread pool exists in it when it forks.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TypeVar

from threadpoolctl import ThreadpoolController

T = TypeVar("T")


class TimeLimitExceeded(Exception):
    """The call ran longer than its limit and was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"time limit: stopped after {seconds:.1f} s")
        self.seconds = seconds


class ChildFailed(Exception):
    """The call raised in the child (the message is its traceback) or the child died."""


@cache
def _thread_pools() -> ThreadpoolController:
    """The loaded BLAS/OpenMP libraries; scanning them costs ~4 ms, so once per process."""
    return ThreadpoolController()


@contextmanager
def fit_threads(threads: int) -> Iterator[None]:
    """Limit the BLAS/OpenMP threads of a fit (inherited by the child it is forked into).

    Without it each OpenMP fit starts a thread per core; with two workers on two cores the
    busy-waiting threads collide and a histogram gradient boosting fit gets 10-40x slower.
    """
    with _thread_pools().limit(limits=threads):
        yield


def run_isolated(call: Callable[[], T], seconds: float | None) -> T:
    """``call()`` in a forked child, stopped after ``seconds``; in-process when None.

    Plain ``os.fork`` rather than ``multiprocessing``: it also works inside daemonic processes
    (Dask workers), and nothing but the result ever crosses the pipe. The result comes with its
    length, so the worker goes on as soon as it has arrived: the child's exit (unmapping a copy
    of the worker's address space, ~8 ms on a 330 MB worker) overlaps the next classifier and
    the child is reaped later.
    """
    if seconds is None:
        return call()
    _reap_finished()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(reader)
        _run_child(call, writer)
    os.close(writer)
    message: bytes | None = None
    try:
        message = _receive(reader, time.monotonic() + seconds, seconds)
    finally:
        os.close(reader)
        if message is None:  # stopped, interrupted or dead: make sure it is gone, then reap
            _kill(pid)
            exit_code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        else:
            _EXITING.add(pid)
    if message is None:
        raise ChildFailed(
            f"the fit's process died with exit code {exit_code}"
            + (" (killed: out of memory?)" if exit_code == -9 else "")
        )
    succeeded, payload = pickle.loads(message)
    if succeeded is None:
        raise KeyboardInterrupt  # Ctrl+C reached the fit: the worker stops as it would
    if not succeeded:
        raise ChildFailed(payload)
    return payload


_HEADER = struct.Struct("!Q")
_EXITING: set[int] = set()  # children that sent their result and are exiting


def _receive(reader: int, deadline: float, seconds: float) -> bytes | None:
    """The child's length-prefixed message; None when the pipe closes before it is whole."""
    buffer = bytearray()
    expected: int | None = None
    while expected is None or len(buffer) < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([reader], [], [], remaining)[0]:
            raise TimeLimitExceeded(seconds)
        chunk = os.read(reader, 1 << 20)
        if not chunk:
            return None
        buffer += chunk
        if expected is None and len(buffer) >= _HEADER.size:
            expected = _HEADER.size + _HEADER.unpack_from(buffer)[0]
    return bytes(buffer[_HEADER.size :])


def _reap_finished() -> None:
    """Collect the exit status of children that have finished exiting (no zombies pile up)."""
    for pid in list(_EXITING):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _EXITING.discard(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _run_child(call: Callable[[], object], writer: int) -> None:
    try:
        try:
            message = pickle.dumps((True, call()), protocol=pickle.HIGHEST_PROTOCOL)
        except KeyboardInterrupt:
            message = pickle.dumps((None, "interrupted"))
        except BaseException:
            message = pickle.dumps((False, traceback.format_exc()))
        view = memoryview(_HEADER.pack(len(message)) + message)
        while view:
            view = view[os.write(writer, view) :]
    finally:
        os._exit(0)  # no atexit handlers: the parent's pools and files are not the child's
