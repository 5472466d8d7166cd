"""The datarun driver: the one loop every front-end runs (``atm worker``, ``atm run``, the
``atm/datarun`` deployment, ``ATM(...).run()``).

It keeps up to ``n_parallel`` classifiers in flight, each proposed from the ModelHub's history
and reserved there first (so budgets hold exactly across any number of drivers); waits while
other drivers still train classifiers of its dataruns (and reclaims them when their leases
expire); waits out a lost database or store with the configured patience; releases its claims
when interrupted; records failed classifiers and removes their files; and completes each
datarun exactly once, finalizing it (ensemble, leaderboard parquet) through its execution.

*Where* classifiers train is an :class:`Execution`: in this process with a fit process for
time limits (:class:`LocalExecution`), or as Prefect tasks (``flows/execution.py``), and so on
any task runner Prefect has (threads, Dask).
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from atm_core import results
from atm_core.cost import CostModel
from atm_core.data.split import HOLDOUT_SHARE, folds_for
from atm_core.errors import ATMError, DataUnavailable, NotFoundError
from atm_core.evaluation import silence_fit_warnings
from atm_core.memory import give_back
from atm_core.modelhub.claims import Claim, DuplicateProposal, time_limit
from atm_core.modelhub.history import search_state
from atm_core.modelhub.hub import ModelHub
from atm_core.modelhub.models import (
    BudgetType,
    Datarun,
    Hyperpartition,
    HyperpartitionStatus,
    utcnow,
)
from atm_core.reporting import ClassifierResult, Reporter
from atm_core.rungs import rung_rows
from atm_core.search.catalogue import builtin_methods, load_method
from atm_core.search.plugins import is_custom
from atm_core.search.proposal import propose
from atm_core.training import (
    INFRASTRUCTURE_ERRORS,
    DataCache,
    Stopwatch,
    Training,
    close_fit_process,
    is_infrastructure_error,
    record_failure,
    start_training,
)

PROPOSAL_ATTEMPTS = 5
log = logging.getLogger(__name__)
MAX_OUTAGE_DELAY = 30.0  # seconds between checks of a lost database or store


@dataclass(frozen=True)
class Plan:
    """What the cost model says about evaluations of one datarun, for the driver's claims."""

    datarun: Datarun
    costs: CostModel
    finish_by: datetime | None

    def shape(self, rung: int) -> tuple[int, int]:
        """(rows each fit sees, fits) of an evaluation at ``rung``."""
        rows = self.datarun.train_rows or 0
        top = self.datarun.top_rung
        if rung < top:
            return round(rung_rows(rung, top, rows) * (1 - HOLDOUT_SHARE)), 1
        folds = folds_for(rows, self.datarun.cv_folds)
        return (rows, folds + 1) if folds else (round(rows * (1 - HOLDOUT_SHARE)), 1)

    def limit(self, method: str, rung: int) -> float | None:
        return self.costs.time_limit(method, *self.shape(rung))

    def affordable(self, method: str, rung: int) -> bool:
        """Whether an evaluation at ``rung`` is predicted to finish before ``finish_by``."""
        if self.finish_by is None:
            return True
        predicted = self.costs.evaluation_seconds(method, *self.shape(rung))
        left = (self.finish_by - utcnow()).total_seconds()
        return predicted is None or predicted <= left


def next_claim(
    hub: ModelHub, datarun: Datarun | int, clock: Stopwatch | None = None
) -> Claim | None:
    """Reclaim an expired classifier, promote a configuration that earned its next rung, or
    propose a new configuration (at rung 0) and reserve it; None when the datarun has nothing
    left to start. The claim carries the time its classifier may take (see :class:`Plan`).

    ``clock`` (optional) gets laps "propose" (history, selector, tuner) and "reserve" (the
    locked transaction: waiting for the datarun's lock included).
    """
    clock = clock or Stopwatch()
    if isinstance(datarun, int):
        datarun = hub.get_datarun(datarun)
    reserve = results.refit_reserve(hub, datarun)
    end = time_limit(datarun)
    finish_by = None if end is None else end - timedelta(seconds=reserve)
    claim = hub.reclaim_expired(datarun.id)
    if claim is not None:
        clock.lap("reserve")
        return replace(claim, finish_by=finish_by)
    state = search_state(hub, datarun, reserve)
    plan = Plan(datarun, state.costs, finish_by)
    if datarun.top_rung and state.has_budget:
        claim = hub.promote(datarun.id, plan.affordable)
        if claim is not None:
            clock.lap("reserve")
            return replace(claim, finish_by=finish_by, seconds=plan.limit(claim.method, claim.rung))
    for attempt in range(PROPOSAL_ATTEMPTS):
        if attempt:
            state = search_state(hub, datarun, reserve)
        if not state.has_budget:
            return None
        outcome = propose(state.partitions, state.config)
        if outcome.exhausted:
            hub.mark_exhausted(outcome.exhausted)
        clock.lap("propose")
        if outcome.proposal is None:
            return None
        try:
            claim = hub.reserve(
                datarun.id, outcome.proposal.hyperpartition_id, outcome.proposal.values
            )
            if claim is None:
                return None
            return replace(claim, finish_by=finish_by, seconds=plan.limit(claim.method, 0))
        except DuplicateProposal:
            continue
        finally:
            clock.lap("reserve")
    return None


class Execution(ABC):
    """Where a driver's classifiers train and its completed dataruns are finalized."""

    lookahead: int = 0  # claims it takes beyond the driver's n_parallel (queued, see Local...)

    @abstractmethod
    def submit(self, claim: Claim) -> Hashable:
        """Start training the claimed classifier; a handle to wait for."""

    @abstractmethod
    def wait(self, handles: list[Hashable]) -> Hashable:
        """Block until one of ``handles`` has finished; return it."""

    @abstractmethod
    def outcome(self, handle: Hashable) -> ClassifierResult:
        """The finished classifier's result; raises what its training raised."""

    @abstractmethod
    def finalize(self, datarun_id: int) -> None:
        """Choose and store a completed datarun's ensemble and leaderboard (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the execution holds (processes, pools)."""


class LocalExecution(Execution):
    """Classifiers train in this process, their fits in the thread's fit process, so that a
    time limit can stop them (``isolated=False``: in this process, no limit).

    One claim more than the driver's ``n_parallel`` waits queued in the fit process: it starts
    the moment the fit before it ends, while this process stores and records that one and
    proposes the next, so bookkeeping costs no fitting time.
    """

    def __init__(self, hub: ModelHub, reporter: Reporter, isolated: bool = True) -> None:
        self.hub = hub
        self.reporter = reporter
        self.isolated = isolated
        self.lookahead = 1 if isolated else 0
        self.cache = DataCache()
        self._queue: list[_Queued] = []  # in the order the fit process runs them

    def submit(self, claim: Claim) -> Hashable:
        queued = _Queued()
        try:
            queued.training = start_training(self.hub, claim, self.cache, isolated=self.isolated)
        except Exception as exc:  # recorded by the driver; Ctrl+C propagates
            queued.error = exc
        self._queue.append(queued)
        if len(self._queue) == 1:
            queued.announce(self.reporter)
        return queued

    def wait(self, handles: list[Hashable]) -> Hashable:
        """The oldest of ``handles``: the fit process answers in order."""
        head = next(q for q in self._queue if q in handles)
        head.announce(self.reporter)  # its fit has started by now
        return head

    def outcome(self, handle: Hashable) -> ClassifierResult:
        assert isinstance(handle, _Queued)
        self._queue.remove(handle)
        if handle.error is not None:
            raise handle.error
        assert handle.training is not None
        return handle.training.finish()

    def finalize(self, datarun_id: int) -> None:
        if not self._queue:  # nothing in flight: the refit gets the memory the search had
            self.cache.clear()
            close_fit_process()
        results.finalize(self.hub, datarun_id)

    def close(self) -> None:
        for queued in self._queue:  # interrupted: their claims are released by the driver
            if queued.training is not None:
                queued.training.stop()
        self._queue.clear()
        close_fit_process()


class _Queued:
    """A claim handed to :class:`LocalExecution`: its training, or why it could not start."""

    def __init__(self) -> None:
        self.training: Training | None = None
        self.error: Exception | None = None

    def announce(self, reporter: Reporter) -> None:
        if self.training is not None:
            self.training.announce(reporter)


@dataclass
class Driver:
    """Works on the highest-priority unfinished datarun (of ``datarun_ids``, or of all) until
    none has work left, or ``total_time`` minutes are up (budgets stop dataruns; this stops
    the driver)."""

    hub: ModelHub
    execution: Execution | None = None
    datarun_ids: list[int] | None = None
    n_parallel: int = 1
    total_time: float | None = None
    reporter: Reporter = field(default_factory=Reporter)
    results: list[ClassifierResult] = field(default_factory=list)
    completed: set[int] = field(default_factory=set)  # dataruns this driver completed
    skipped: dict[int, str] = field(default_factory=dict)  # dataruns it left, and why
    _in_flight: dict[Hashable, tuple[Claim, dict[str, float]]] = field(default_factory=dict)
    _started: set[int] = field(default_factory=set)
    _finalizing: set[int] = field(default_factory=set)
    _leftovers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.execution is None:
            self.execution = LocalExecution(self.hub, self.reporter)
        self.n_parallel = max(1, self.n_parallel)

    def run(self) -> Driver:
        """Drive until no datarun has work left; returns itself (``results``, ``completed``).

        Unknown ``datarun_ids`` are refused before any work. A datarun this driver cannot work
        on (its data unreadable here, or custom code that the ``custom_code`` setting refuses)
        is left to other workers, and reported at the end as an error.
        """
        if self.datarun_ids:
            missing = self.hub.missing_dataruns(self.datarun_ids)
            if missing:
                raise NotFoundError(
                    f"no datarun with id {', '.join(map(str, missing))} in the ModelHub"
                )
        silence_fit_warnings()
        stop_at = utcnow() + timedelta(minutes=self.total_time) if self.total_time else None
        try:
            while stop_at is None or utcnow() < stop_at or self._in_flight:
                try:
                    if not self._cycle(stopping=stop_at is not None and utcnow() >= stop_at):
                        break
                except INFRASTRUCTURE_ERRORS as exc:
                    self._wait_for_infrastructure(exc)
        except BaseException:
            self._release_in_flight()
            raise
        finally:
            assert self.execution is not None
            self.execution.close()
        if self.skipped:
            raise ATMError("; ".join(self.skipped.values()))
        return self

    # -- one round --------------------------------------------------------------------------
    def _cycle(self, stopping: bool) -> bool:
        """Claim up to ``n_parallel`` classifiers, then collect one; False when all is done."""
        for datarun_id in list(self._finalizing):  # interrupted by an outage: again
            self._finalize(self.hub.get_datarun(datarun_id))
        dataruns = [
            d for d in self.hub.dataruns_by_priority(self.datarun_ids) if d.id not in self.skipped
        ]
        if not stopping:
            for datarun in dataruns:
                self._fill(datarun)
                if len(self._in_flight) >= self._capacity():
                    break
        if self._in_flight:
            self._collect(self.execution.wait(list(self._in_flight)))  # type: ignore[union-attr]
            return True
        if stopping:
            return False
        busy = [d for d in dataruns if self.hub.running_count(d.id)]
        if busy:
            self.reporter.waiting(busy[0], self.hub.running_count(busy[0].id))
            time.sleep(self.hub.settings.poll_seconds)
            return True
        self.reporter.no_dataruns()
        return False

    def _fill(self, datarun: Datarun) -> None:
        """Claim classifiers of ``datarun`` while slots are free; finish it when it has none
        to give and nothing of it runs here."""
        if datarun.id not in self._started:
            self._started.add(datarun.id)
            refused = self._refused_code(datarun)
            if refused:
                self._skip(datarun.id, refused)
                return
            self.reporter.datarun_started(datarun, self.hub.get_dataset(datarun.dataset_id))
        while len(self._in_flight) < self._capacity():
            clock = Stopwatch()
            claim = next_claim(self.hub, datarun, clock)
            if claim is None:
                if not any(c.datarun_id == datarun.id for c, _ in self._in_flight.values()):
                    self._finish(datarun)
                return
            self._submit(claim, clock.laps)

    def _capacity(self) -> int:
        return self.n_parallel + self.execution.lookahead  # type: ignore[union-attr]

    def _submit(self, claim: Claim, laps: dict[str, float]) -> None:
        placeholder = object()  # the claim is released on Ctrl+C even while it trains here
        self._in_flight[placeholder] = (claim, laps)
        handle = self.execution.submit(claim)  # type: ignore[union-attr]
        self._in_flight[handle] = self._in_flight.pop(placeholder)

    def _collect(self, handle: Hashable) -> None:
        claim, laps = self._in_flight[handle]
        try:
            result = self.execution.outcome(handle)  # type: ignore[union-attr]
        except DataUnavailable as exc:  # nothing the classifier did: its slot goes back
            del self._in_flight[handle]
            self.hub.release(claim)
            self._skip(claim.datarun_id, str(exc))
            return
        except Exception as exc:  # its retries are spent: record it, never as a success
            del self._in_flight[handle]
            leftover = record_failure(self.hub, claim, exc)
            if leftover is not None:
                self._leftovers.append(leftover)
            result = _failed_result(claim, exc)
            self.reporter.classifier_finished(result)
            self.results.append(result)
            if is_infrastructure_error(exc):
                raise  # the store or the database is down: wait for it before claiming more
            return
        del self._in_flight[handle]  # (Ctrl+C above: still in flight, so released)
        result.timings = {**laps, **result.timings}
        self.results.append(result)
        self.reporter.classifier_finished(result)
        datarun = self.hub.get_datarun(claim.datarun_id)
        if not any(c.datarun_id == datarun.id for c, _ in self._in_flight.values()):
            self._finish(datarun)
        give_back(collect=False)  # the round's buffers (pickles, parquet, queries): ~10 MB

    def _skip(self, datarun_id: int, reason: str) -> None:
        self.skipped[datarun_id] = reason
        self.reporter.datarun_skipped(datarun_id, reason)

    def _refused_code(self, datarun: Datarun) -> str | None:
        """Why this driver refuses the datarun's custom code (None: it runs it)."""
        if self.hub.settings.custom_code == "allow":
            return None
        custom = custom_code(datarun, self.hub.hyperpartitions(datarun.id))
        if not custom:
            return None
        return (
            f"datarun {datarun.id} runs code of its own ({', '.join(custom)}), which this "
            "worker refuses (ATM_CUSTOM_CODE=refuse)"
        )

    # -- the end of a datarun ---------------------------------------------------------------
    def _finish(self, datarun: Datarun) -> None:
        """Complete the datarun if its work is done (exactly one driver does), then finalize."""
        if self.hub.finish_if_done(datarun.id, results.refit_reserve(self.hub, datarun)):
            self._finalizing.add(datarun.id)
            self._finalize(datarun)

    def _finalize(self, datarun: Datarun) -> None:
        try:
            self.execution.finalize(datarun.id)  # type: ignore[union-attr]
        except ATMError as exc:  # the datarun is complete; `atm ensemble` can choose it later
            log.warning("datarun %d is complete, but finalizing it failed: %s", datarun.id, exc)
        self._finalizing.discard(datarun.id)
        self.completed.add(datarun.id)
        ended = self.hub.get_datarun(datarun.id)
        self.reporter.datarun_ended(ended, end_reason(self.hub, ended))

    # -- faults -----------------------------------------------------------------------------
    def _wait_for_infrastructure(self, error: BaseException) -> None:
        """Back off (1 s, 2 s, ... 30 s) until the database and the store answer again; give
        up (raise ``error``) after the outage patience. Then remove the files of classifiers
        that errored while the store was down."""
        started = time.monotonic()
        delay = 1.0
        while True:
            if time.monotonic() - started > self.hub.settings.outage_patience_seconds:
                raise error
            self.reporter.infrastructure_down(error, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_OUTAGE_DELAY)
            try:
                self.hub.ping()
                self.hub.store.check()
                while self._leftovers:
                    self.hub.store.delete_prefix(self._leftovers[-1])
                    self._leftovers.pop()
            except INFRASTRUCTURE_ERRORS as exc:
                error = exc
                continue
            self.reporter.infrastructure_back()
            return

    def _release_in_flight(self) -> None:
        """Give back the slots of classifiers still in flight (interrupted: Ctrl+C, a crash)."""
        for claim, _ in self._in_flight.values():
            with contextlib.suppress(Exception):  # the database is gone too: the lease expires
                self.hub.release(claim)
        self._in_flight.clear()


def _failed_result(claim: Claim, error: BaseException) -> ClassifierResult:
    return ClassifierResult(
        classifier_id=claim.classifier_id,
        datarun_id=claim.datarun_id,
        method="",
        values={},
        status="errored",
        error=f"{type(error).__name__}: {error}",
    )


def custom_code(datarun: Datarun, partitions: list[Hyperpartition]) -> list[str]:
    """The code of its own a datarun makes every worker run: selector or tuner files, and
    estimator classes outside the built-in catalogue."""
    builtin = {load_method(name).estimator_class for name in builtin_methods()}
    found = [
        f"{kind} {name}"
        for kind, name in (("selector", datarun.selector), ("tuner", datarun.tuner))
        if is_custom(name)
    ]
    found += sorted({p.estimator_class for p in partitions} - builtin)
    return found


def end_reason(hub: ModelHub, datarun: Datarun) -> str:
    """Why a complete datarun ended, in the words the original worker printed."""
    if not any(
        hp.status == HyperpartitionStatus.INCOMPLETE for hp in hub.hyperpartitions(datarun.id)
    ):
        return "no hyperpartition is left to explore"
    if datarun.budget_type == BudgetType.CLASSIFIER and (
        hub.progress(datarun.id).classifiers >= datarun.budget
    ):
        return "classifier budget has run out"
    # a timed datarun stops early by its final refit's reserve, so compare limits, not clocks
    if datarun.deadline is not None and time_limit(datarun) == datarun.deadline:
        return "the deadline has passed"
    if datarun.budget_type == BudgetType.WALLTIME:
        return "walltime budget has run out"
    return "classifier budget has run out"
