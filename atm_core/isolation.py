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
from collections import deque
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


class FitCall:
    """One call handed to a :class:`FitProcess`: what it runs, its limits, and once answered,
    its outcome (see :meth:`FitProcess.result`)."""

    def __init__(
        self,
        function: Callable[..., object],
        args: tuple,
        context: object,
        seconds: float | None,
        threads: int | None,
        until: float | None,
    ) -> None:
        self.function, self.args, self.context = function, args, context
        self.seconds, self.threads, self.until = seconds, threads, until
        self.sent_at = self.started_at = self.answered_at = 0.0
        self.local = False  # runs in the caller's process, when its result is asked
        self.done = False
        self._value: object = None
        self._error: BaseException | None = None

    def settle(self, value: object = None, error: BaseException | None = None) -> None:
        self.done, self._value, self._error = True, value, error

    def seconds_running(self) -> float:
        """How long it ran (in the child, from the moment the child started it)."""
        return max(self.answered_at - self.started_at, 0.0)

    def outcome(self) -> object:
        if self._error is not None:
            raise self._error
        return self._value


class FitProcess:
    """A forked child that runs ``function(context, *args)`` calls one after the other.

    The child is forked on the first call with a given ``context`` (the loaded data: inherited,
    never pickled) and serves later calls with the same one; ``function`` and ``args`` go to it
    pickled. A call over its limit, interrupted or killed takes the child with it, and the next
    call forks a new one; so do a new context and every ``MAX_CALLS`` calls (a long-lived child
    would keep whatever its fits fragmented). Plain ``os.fork`` rather than ``multiprocessing``:
    it also works inside daemonic processes (Dask workers). One per thread.

    :meth:`submit` queues a call in the child's pipe and returns at once, so a caller can
    prepare the next call, and store the last one's result, while the child fits: the child
    starts each call the moment it has answered the one before. A call's time limit counts from
    that moment (and never past its ``until``); when a call is stopped, the calls queued behind
    it go to a new child.
    """

    MAX_CALLS = 200
    MAX_QUEUED_BYTES = 16 << 10  # a queued request waits in the pipe's buffer (64 kB on Linux)

    def __init__(self) -> None:
        self._child: _Child | None = None
        self._queue: deque[FitCall] = deque()  # sent to the child, not answered yet
        self._answered_at = 0.0  # when the child last answered (it started the next call then)
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
        """``function(context, *args)`` in the child, stopped after ``seconds`` (in this
        process, without a limit, when None, unless ``fork``: in the child, without a limit)."""
        call = self.submit(function, args, context, seconds, threads, fork=fork)
        return self.result(call)  # type: ignore[return-value]

    def submit(
        self,
        function: Callable[..., object],
        args: tuple,
        context: object,
        seconds: float | None,
        threads: int | None = None,
        until: float | None = None,
        *,
        fork: bool = False,
    ) -> FitCall:
        """Queue a call (``until``: a ``time.monotonic()`` it may not run past); with
        ``seconds`` None it runs in this process, without a limit, when its result is asked
        (unless ``fork``: in the child, without a limit)."""
        call = FitCall(function, args, context, seconds, threads, until)
        call.local = seconds is None and not fork
        if not call.local:
            self._send(call)
        return call

    def result(self, call: FitCall) -> object:
        """Wait for ``call``'s answer (the calls before it are answered first); its value, or
        what stopped it: :class:`TimeLimitExceeded`, :class:`ChildFailed`, KeyboardInterrupt."""
        if call.local and not call.done:
            call.started_at = time.monotonic()
            try:
                with fit_threads(call.threads):
                    call.settle(call.function(call.context, *call.args))
            except Exception as exc:
                call.settle(error=exc)
            finally:
                call.answered_at = time.monotonic()
        while not call.done:
            self._answer_next()
        return call.outcome()

    def close(self) -> None:
        """End the child and reap it (its CPU time counts as this process's children's); calls
        still queued are dropped, unanswered."""
        for call in self._queue:
            call.settle(error=ChildFailed("the fit process was closed before this call ran"))
        self._queue.clear()
        if self._child is not None:
            self._child.stop()
            self._child = None

    def _send(self, call: FitCall) -> None:
        request = pickle.dumps((call.function, call.args, call.threads), pickle.HIGHEST_PROTOCOL)
        child = self._child
        if (
            child is None
            or child.context is not call.context
            or not child.usable(self.MAX_CALLS)
            or len(request) > self.MAX_QUEUED_BYTES
        ):
            while self._queue:  # those calls belong to this child: let it answer them first
                self._answer_next()
            child = self._child
        if child is None or child.context is not call.context or not child.usable(self.MAX_CALLS):
            self.close()
            child = self._child = _Child.fork(call.context)
        call.sent_at = time.monotonic()
        if not self._queue:
            self._answered_at = call.sent_at
        self._queue.append(call)
        with contextlib.suppress(BrokenPipeError):  # it died: seen when its answer is awaited
            child.send(request)

    def _answer_next(self) -> None:
        call = self._queue[0]
        started = call.started_at = max(call.sent_at, self._answered_at)
        deadline = started + call.seconds if call.seconds is not None else None
        if call.until is not None:
            deadline = call.until if deadline is None else min(deadline, call.until)
        child = self._child
        assert child is not None
        try:
            value = child.receive(
                deadline, None if deadline is None else max(deadline - started, 0.0)
            )
        except BaseException as exc:
            call.answered_at = time.monotonic()
            self._queue.popleft()
            call.settle(error=exc)
            if not child.stopped:  # the call raised: the child goes on with the next one
                return
            self._child = None
            waiting, self._queue = list(self._queue), deque()
            if isinstance(exc, KeyboardInterrupt):
                for queued in waiting:
                    queued.settle(error=ChildFailed("interrupted before this call ran"))
                raise
            for queued in waiting:  # to a new child, their limits counted from now
                self._send(queued)
            return
        self._answered_at = call.answered_at = time.monotonic()
        self._queue.popleft()
        call.settle(value)


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

    def send(self, request: bytes) -> None:
        self.calls += 1
        _send(self.requests, request)

    def receive(self, deadline: float | None, seconds: float | None) -> object:
        """The answer to the oldest request; the child is stopped when it is late, dead or
        interrupted (and the matching error raised)."""
        message: bytearray | None = None
        try:
            message = _receive(self.replies, deadline, seconds)
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


def _receive(reader: int, deadline: float | None, seconds: float | None) -> bytearray | None:
    """One length-prefixed message (waiting until the monotonic ``deadline`` at most, then
    raising :class:`TimeLimitExceeded` for ``seconds``; for ever when None); None when the pipe
    closes before it is whole. Read into one buffer of the announced size: a model's pickle is
    not copied on its way."""
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
            request = _receive(requests, None, None)
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
