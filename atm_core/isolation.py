"""Run fits in a forked child process, so that a time limit can stop them.

``timeout_seconds``-style limits cannot interrupt a scikit-learn fit running in the worker's own
process; a child process can simply be killed. The child is forked (the data already loaded in
the worker is shared copy-on-write, nothing of it is pickled) and sends back only the result:
the pickled model and its scores. A child that dies (out of memory, a crash in native code)
costs one classifier, not the worker. The worker process itself never fits a model, so no
OpenMP thread pool exists in it when it forks.

A :class:`FitProcess` keeps its child for the next call on the same data: forking a 330 MB
worker, the copy-on-write faults it sets off in both processes and the child's exit cost
~40 ms per classifier when every fit had a child of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import signal
import struct
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TypeVar

from threadpoolctl import ThreadpoolController

from atm_core.memory import freeze_for_fork, give_back

T = TypeVar("T")
BLAS_THREADS = 1  # in a fit, whatever its thread count: see fit_threads


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
def fit_threads(threads: int | None) -> Iterator[None]:
    """Limit a fit's OpenMP threads to ``threads`` and its BLAS to one (inherited by a child
    forked inside); None leaves them as they are.

    Without a limit each OpenMP fit starts a thread per core; with two workers on two cores the
    busy-waiting threads collide and a histogram gradient boosting fit gets 10-40x slower.
    scikit-learn's BLAS calls are small (an MLP's minibatches, a logistic regression's
    matrix-vector products): on the 100k benchmark set with two threads each, one BLAS thread
    fitted a logistic regression in 0.55 s instead of 0.76-0.97 s and an MLP or a k-NN as fast
    (7.0 s, 3.3 s), and spared the fit process 15 MB of per-thread BLAS buffers.
    """
    if threads is None:
        yield
        return
    with _thread_pools().limit(limits={"openmp": threads, "blas": BLAS_THREADS}):
        yield


def run_isolated(call: Callable[[], T], seconds: float | None, *, fork: bool = False) -> T:
    """``call()`` in a child forked for it alone, stopped after ``seconds``; in-process when
    None, unless ``fork`` (the call's memory then leaves with the child: a final refit's
    design matrix does not stay in a worker's heap). The closure is inherited by the fork, so
    it need not be picklable."""
    process = FitProcess()
    try:
        return process.run(_invoke, (), call, seconds, fork=fork)
    finally:
        process.close()


def _invoke(call: Callable[[], T]) -> T:
    return call()


class FitProcess:
    """A forked child that runs ``function(context, *args)`` calls one at a time.

    The child is forked on the first call with a given ``context`` (the loaded data: inherited,
    never pickled) and serves later calls with the same one; ``function`` and ``args`` go to it
    pickled. A call over its limit, interrupted or killed takes the child with it, and the next
    call forks a new one; so do a new context and every ``MAX_CALLS`` calls (a long-lived child
    would keep whatever its fits fragmented). Plain ``os.fork`` rather than ``multiprocessing``:
    it also works inside daemonic processes (Dask workers). One per thread: calls do not
    overlap.
    """

    MAX_CALLS = 200

    def __init__(self) -> None:
        self._child: _Child | None = None
        _LIVE.add(self)

    def run(
        self,
        function: Callable[..., T],
        args: tuple,
        context: object,
        seconds: float | None,
        threads: int | None = None,
        *,
        fork: bool = False,
    ) -> T:
        """``function(context, *args)`` in the child, stopped after ``seconds``; in this
        process when None, unless ``fork``."""
        if seconds is None and not fork:
            with fit_threads(threads):
                return function(context, *args)
        child = self._child
        if child is None or child.context is not context or not child.usable(self.MAX_CALLS):
            self.close()
            child = self._child = _Child.fork(context)
        try:
            return child.call(function, args, threads, seconds)
        finally:
            if child.stopped:
                self._child = None

    def close(self) -> None:
        """End the child and reap it (its CPU time counts as this process's children's)."""
        if self._child is not None:
            self._child.stop()
            self._child = None


_HEADER = struct.Struct("!Q")
ORPHAN_CHECK_SECONDS = 5.0
_LIVE: weakref.WeakSet[FitProcess] = weakref.WeakSet()
_PARENT_ENDS: set[int] = set()  # this process's ends of its live children's pipes


@atexit.register
def _close_all() -> None:
    """At exit, end the fit processes of threads that never closed theirs (a flow's task
    threads): they would exit by themselves, but unreaped, their CPU time unaccounted."""
    for process in list(_LIVE):
        process.close()


class _Child:
    def __init__(self, pid: int, requests: int, replies: int, context: object) -> None:
        self.pid, self.requests, self.replies, self.context = pid, requests, replies, context
        self.calls = 0
        self.stopped = False

    @classmethod
    def fork(cls, context: object) -> _Child:
        request_reader, request_writer = os.pipe()
        reply_reader, reply_writer = os.pipe()
        _thread_pools()  # scanned once here, not again in every child
        freeze_for_fork()
        pid = os.fork()
        if pid == 0:
            # A sibling's pipe ends held here would keep that sibling from seeing its EOF.
            _close(request_writer, reply_reader, *_PARENT_ENDS)
            _serve(context, request_reader, reply_writer)
        os.close(request_reader)
        os.close(reply_writer)
        _PARENT_ENDS.update((request_writer, reply_reader))
        return cls(pid, request_writer, reply_reader, context)

    def usable(self, max_calls: int) -> bool:
        """Not worn out, and still alive (a signal may have ended it while it waited)."""
        if self.calls >= max_calls:
            return False
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False

    def call(
        self, function: Callable[..., T], args: tuple, threads: int | None, seconds: float | None
    ):
        self.calls += 1
        message: bytearray | None = None
        try:
            _send(self.requests, pickle.dumps((function, args, threads), pickle.HIGHEST_PROTOCOL))
            message = _receive(self.replies, seconds)
        except BrokenPipeError:
            pass  # it died before reading the request: reported below
        finally:
            if message is None:  # stopped, interrupted or dead
                exit_code = self.stop()
        if message is None:
            raise ChildFailed(
                f"the fit's process died with exit code {exit_code}"
                + (" (killed: out of memory?)" if exit_code == -9 else "")
            )
        succeeded, payload = pickle.loads(message)
        if succeeded is None:
            self.stop()
            raise KeyboardInterrupt  # Ctrl+C reached the fit: the worker stops as it would
        if not succeeded:
            raise ChildFailed(payload)
        return payload

    def stop(self) -> int:
        """Kill the child (idle or not), reap it and return its exit code."""
        self.stopped = True
        self._close_pipes()
        _kill(self.pid)
        try:
            return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        except ChildProcessError:
            return -9

    def _close_pipes(self) -> None:
        _PARENT_ENDS.difference_update((self.requests, self.replies))
        _close(self.requests, self.replies)


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _send(fd: int, message: bytes) -> None:
    for part in (_HEADER.pack(len(message)), message):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def _receive(reader: int, seconds: float | None) -> bytearray | None:
    """One length-prefixed message (waiting ``seconds`` at most, or for ever when None); None
    when the pipe closes before it is whole. Read into one buffer of the announced size: a
    model's pickle is not copied on its way."""
    deadline = None if seconds is None else time.monotonic() + seconds
    header = _read_into(reader, bytearray(_HEADER.size), deadline, seconds)
    if header is None:
        return None
    return _read_into(reader, bytearray(_HEADER.unpack(header)[0]), deadline, seconds)


def _read_into(
    reader: int, buffer: bytearray, deadline: float | None, seconds: float | None
) -> bytearray | None:
    filled = 0
    while filled < len(buffer):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([reader], [], [], remaining)[0]:
                raise TimeLimitExceeded(seconds or 0.0)
        chunk = os.read(reader, min(len(buffer) - filled, 1 << 20))
        if not chunk:
            return None
        buffer[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return buffer


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _serve(context: object, requests: int, replies: int) -> None:
    """The child: answer requests until the pipe closes or the worker is gone; never returns.

    The pipe closes when the worker exits, unless another process inherited its end (a fork
    by another thread at the wrong moment): the child also leaves once it is orphaned.
    """
    parent = os.getppid()
    try:
        while True:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C matters only during a fit
            while not select.select([requests], [], [], ORPHAN_CHECK_SECONDS)[0]:
                if os.getppid() != parent:
                    return
            request = _receive(requests, None)
            if request is None:
                return  # the worker let it go, or is gone
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                function, args, threads = pickle.loads(request)
                with fit_threads(threads):
                    message = pickle.dumps(
                        (True, function(context, *args)), protocol=pickle.HIGHEST_PROTOCOL
                    )
            except KeyboardInterrupt:
                message = pickle.dumps((None, "interrupted"))
            except BaseException:
                message = pickle.dumps((False, traceback.format_exc()))
            _send(replies, message)
            del message
            give_back()  # what the fit freed, before the next one (the worker is not waiting)
    finally:
        os._exit(0)  # no atexit handlers: the parent's pools and files are not the child's
