"""One worker step: claim -> select -> tune -> train -> score -> save.

The CLI worker loops over these steps; the Prefect flow calls the same functions from its
tasks (:func:`next_claim` to reserve, :func:`train_classifier` to train), so both follow one
code path. Model errors are recorded on the classifier and the worker moves on; object-store
failures (after the store's own retries) raise :class:`ArtifactStoreError` for the caller to
retry or record.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sklearn.base import clone

from atm_core.artifacts import ArtifactStoreError, serialize_model
from atm_core.data.split import TrainTest, load_train_test
from atm_core.ensemble import CANDIDATES
from atm_core.evaluation import Evaluation, evaluate, resolve_metric, silence_fit_warnings
from atm_core.isolation import ChildFailed, FitProcess, TimeLimitExceeded
from atm_core.memory import configure_allocators, give_back
from atm_core.modelhub.claims import Claim, DuplicateProposal, Outcome, time_limit
from atm_core.modelhub.hub import DATABASE_ERRORS, ModelHub, judgment
from atm_core.modelhub.models import (
    BudgetType,
    ClassifierStatus,
    Datarun,
    Dataset,
    ErrorKind,
    HyperpartitionStatus,
    utcnow,
)
from atm_core.results import build_ensemble, classifier_pipeline, write_leaderboard
from atm_core.search.proposal import propose

PROPOSAL_ATTEMPTS = 5
MIN_TIME_LIMIT = 10.0  # seconds
WALLTIME_SHARE = 0.25  # of a walltime budget, for one classifier
CLASSIFIER_BUDGET_TIME_LIMIT = 600.0
MIN_REMAINING = 1.0  # a classifier reserved just before the end still gets a second
log = logging.getLogger(__name__)
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    ArtifactStoreError,
    *DATABASE_ERRORS,
    ConnectionError,
    TimeoutError,
)


def is_infrastructure_error(error: object) -> bool:
    """A lost database or object store (worth retrying), as opposed to a bad model or input."""
    return isinstance(error, INFRASTRUCTURE_ERRORS)


def record_infrastructure_failure(hub: ModelHub, claim: Claim, error: BaseException) -> str | None:
    """After retries ran out: the classifier is errored (never complete) and its files removed.

    Returns the key of files that could not be removed because the store is down too, for the
    caller to remove once it is back (None when nothing is left behind).
    """
    hub.fail_classifier(
        claim, f"infrastructure failure after retries: {error!r}", ErrorKind.INFRASTRUCTURE
    )
    prefix = hub.store.classifier_prefix(claim.datarun_id, claim.classifier_id, claim.attempt)
    try:
        hub.store.delete_prefix(prefix)
    except ArtifactStoreError as exc:
        log.warning("files of errored classifier %d remain for now: %s", claim.classifier_id, exc)
        return prefix
    return None


def record_failure(hub: ModelHub, claim: Claim, error: BaseException) -> str | None:
    """Record a classifier whose run raised (after any retries), whatever the cause.

    Infrastructure errors go through :func:`record_infrastructure_failure`; anything else is
    recorded with its traceback as the classifier's own error.
    """
    if is_infrastructure_error(error):
        return record_infrastructure_failure(hub, claim, error)
    hub.fail_classifier(claim, "".join(traceback.format_exception(error)))
    return None


@dataclass
class ClassifierResult:
    """What happened to one classifier, for reporting."""

    classifier_id: int
    datarun_id: int
    method: str
    values: dict[str, Any]
    status: str  # complete | errored | lost | skipped
    metric: str = ""
    score_target: str = "cv"
    cv_mean: float | None = None
    cv_stdev: float | None = None
    test: float | None = None
    judgment: float | None = None
    previous_best: tuple[int, float, float | None] | None = None
    model_location: str | None = None
    metrics_location: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase

    @property
    def bookkeeping_seconds(self) -> float:
        """Time spent on the ModelHub and the artifact store rather than on fitting."""
        return sum(v for k, v in self.timings.items() if k != "fit")

    @property
    def is_new_best(self) -> bool:
        if self.status != "complete" or self.judgment is None:
            return False
        return self.previous_best is None or self.judgment > self.previous_best[1]


class Stopwatch:
    """Lap times of one classifier's phases, kept in a dict the result carries."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> dict[str, float]:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now
        return self.laps


class Reporter:
    """Receives what a worker does; the CLI prints it, the flow logs it. Default: silent."""

    def datarun_started(self, datarun: Datarun, dataset: Dataset) -> None: ...

    def classifier_started(self, claim: Claim, method: str, values: dict[str, Any]) -> None: ...

    def classifier_finished(self, result: ClassifierResult) -> None: ...

    def datarun_ended(self, datarun: Datarun, reason: str) -> None: ...

    def waiting(self, datarun: Datarun, running: int) -> None: ...

    def no_dataruns(self) -> None: ...

    def infrastructure_down(self, error: BaseException, retry_in: float) -> None: ...

    def infrastructure_back(self) -> None: ...


_fit_processes = threading.local()


def fit_process() -> FitProcess:
    """This thread's fit process: one per worker thread, kept from one classifier to the next."""
    process = getattr(_fit_processes, "process", None)
    if process is None:
        process = _fit_processes.process = FitProcess()
    return process


def close_fit_process() -> None:
    """End this thread's fit process and reap it (a worker that is done leaves no child)."""
    process = getattr(_fit_processes, "process", None)
    if process is not None:
        process.close()


class DataCache:
    """Each worker process reads and splits a dataset once, not once per classifier."""

    def __init__(self, max_items: int = 4) -> None:
        self._items: OrderedDict[tuple, TrainTest] = OrderedDict()
        self._lock = threading.Lock()
        self._max_items = max_items

    def get(self, hub: ModelHub, dataset: Dataset, datarun: Datarun) -> TrainTest:
        key = (dataset.id, datarun.seed, datarun.test_size, datarun.cv_folds)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            configure_allocators()
            data = load_train_test(
                dataset.train_path,
                dataset.test_path,
                dataset.class_column,
                hub.schema_of(dataset),
                dataset.content_hash,
                datarun.seed,
                datarun.test_size,
                datarun.cv_folds,
            )
            self._items[key] = data
            if len(self._items) > self._max_items:
                self._items.popitem(last=False)
            give_back(collect=False)  # the file's bytes and parsing buffers (100k rows: 10 MB)
            return data


class Heartbeat:
    """Renews a claim's lease in the background while the classifier trains."""

    def __init__(self, hub: ModelHub, claim: Claim) -> None:
        self.hub = hub
        self.claim = claim
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{claim.classifier_id}", daemon=True
        )

    def _beat(self) -> None:
        interval = max(self.hub.settings.lease_seconds / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                if not self.hub.renew_lease(self.claim):
                    self.lost = True
                    return
            except DATABASE_ERRORS:
                continue  # the database is away: keep trying until the lease runs out

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def next_claim(hub: ModelHub, datarun_id: int, clock: Stopwatch | None = None) -> Claim | None:
    """Reclaim an expired classifier, or propose a new configuration and reserve it.

    ``clock`` (optional) gets laps "propose" (history, selector, tuner) and "reserve" (the
    locked transaction: waiting for the datarun's lock included).
    """
    clock = clock or Stopwatch()
    claim = hub.reclaim_expired(datarun_id)
    if claim is not None:
        clock.lap("reserve")
        return claim
    datarun = hub.get_datarun(datarun_id)
    config = hub.search_config(datarun)
    for _ in range(PROPOSAL_ATTEMPTS):
        if not hub.has_budget(datarun_id):
            return None
        outcome = propose(hub.search_history(datarun_id), config)
        hub.mark_exhausted(outcome.exhausted)
        clock.lap("propose")
        if outcome.proposal is None:
            return None
        try:
            return hub.reserve(
                datarun_id, outcome.proposal.hyperpartition_id, outcome.proposal.values
            )
        except DuplicateProposal:
            continue
        finally:
            clock.lap("reserve")
    return None


def fit_and_serialize(
    data: TrainTest, template: Any, metric: str, seed: int
) -> tuple[Evaluation, bytes]:
    """Cross-validate, refit and pickle ``template``'s configuration (an unfitted pipeline):
    the part of a classifier a time limit may stop, run in the worker's fit process."""
    silence_fit_warnings()  # the flow's task threads fork fit processes too
    evaluation = evaluate(partial(clone, template), data, metric, seed)
    blob = serialize_model(evaluation.model)
    evaluation.model = None  # travels as the pickle only
    return evaluation, blob


def classifier_time_limit(datarun: Datarun, now: datetime | None = None) -> float | None:
    """Seconds the next classifier of ``datarun`` may run; None means no limit.

    An explicit ``time_limit`` wins (0 turns limits off); otherwise a quarter of a walltime
    budget (at least 10 s) or 10 minutes for a classifier budget. Never past the datarun's own
    end (walltime or deadline), so a walltime datarun ends on time.
    """
    if datarun.time_limit is not None:
        limit = datarun.time_limit or None
    elif datarun.budget_type == BudgetType.WALLTIME:
        limit = max(MIN_TIME_LIMIT, WALLTIME_SHARE * datarun.budget * 60)
    else:
        limit = CLASSIFIER_BUDGET_TIME_LIMIT
    end = time_limit(datarun)
    if end is not None:
        remaining = max((end - (now or utcnow())).total_seconds(), MIN_REMAINING)
        limit = remaining if limit is None else min(limit, remaining)
    return limit


def train_classifier(
    hub: ModelHub, claim: Claim, cache: DataCache, reporter: Reporter | None = None
) -> ClassifierResult:
    """Train, score and store the claimed classifier. Safe to call again with the same claim."""
    reporter = reporter or Reporter()
    clock = Stopwatch()
    classifier = hub.get_classifier(claim.classifier_id)
    partition = hub.get_hyperpartition(classifier.hyperpartition_id)
    datarun = hub.get_datarun(claim.datarun_id)
    dataset = hub.get_dataset(datarun.dataset_id)
    result = ClassifierResult(
        classifier_id=classifier.id,
        datarun_id=datarun.id,
        method=partition.method,
        values=classifier.hyperparameters_values,
        status="skipped",
        score_target=datarun.score_target.value,
    )
    if classifier.claim_token != claim.token:
        result.status = "lost"
        return result
    if classifier.status != ClassifierStatus.RUNNING:
        result.status = classifier.status.value  # a retry of work already recorded
        return result
    result.timings = clock.lap("load")
    reporter.classifier_started(claim, partition.method, classifier.hyperparameters_values)
    prefix = hub.store.classifier_prefix(datarun.id, classifier.id, claim.attempt)
    with Heartbeat(hub, claim) as heartbeat:
        try:
            result.metric = resolve_metric(datarun.metric, dataset.k_classes)
            data = cache.get(hub, dataset, datarun)
            schema = hub.schema_of(dataset)

            # Built here, so that the estimator's modules are imported by the worker and
            # inherited by the fit process it forks; the pipeline itself travels pickled.
            template = classifier_pipeline(
                classifier, partition, datarun, schema, hub.settings.threads
            )
            evaluation, blob = fit_process().run(
                fit_and_serialize,
                (template, result.metric, datarun.seed),
                data,
                classifier_time_limit(datarun),
                hub.settings.threads,
            )
            clock.lap("fit")
        except Exception as exc:
            isolated = isinstance(exc, TimeLimitExceeded | ChildFailed)
            result.error = str(exc) if isolated else traceback.format_exc()
            result.status = "errored" if hub.fail_classifier(claim, result.error) else "lost"
            reporter.classifier_finished(result)
            return result
        # Predictions only matter to a classifier that may end among the ensemble's candidates:
        # with CANDIDATES complete classifiers ahead of it already, it never will (the count
        # only grows), and its predictions.parquet (a third write) is left out.
        standing = hub.standing(datarun.id, evaluation.judgment(datarun.score_target.value))
        clock.lap("record")
        predictions = evaluation.predictions if standing.ahead < CANDIDATES else None
        files = hub.store.save_classifier_files(prefix, blob, evaluation.metrics, predictions)
        clock.lap("store")
        if standing.best is not None:
            result.previous_best = (
                standing.best.id,
                judgment(standing.best, datarun.score_target),
                standing.best.cv_judgment_metric_stdev,
            )
        outcome = Outcome(
            model_location=files.model.location,
            model_sha256=files.model.sha256,
            metrics_location=files.metrics_location,
            predictions_location=files.predictions_location,
            cv_judgment_metric=evaluation.cv_judgment_metric,
            cv_judgment_metric_stdev=evaluation.cv_judgment_metric_stdev,
            test_judgment_metric=evaluation.test_judgment_metric,
        )
        completed = not heartbeat.lost and hub.complete_classifier(claim, outcome)
        clock.lap("record")
    if not completed:
        hub.store.delete_prefix(prefix)  # another worker owns this classifier now
        result.status = "lost"
        return result
    result.status = "complete"
    result.cv_mean = evaluation.cv_judgment_metric
    result.cv_stdev = evaluation.cv_judgment_metric_stdev
    result.test = evaluation.test_judgment_metric
    result.judgment = evaluation.judgment(datarun.score_target.value)
    result.model_location = files.model.location
    result.metrics_location = files.metrics_location
    reporter.classifier_finished(result)
    return result


@dataclass
class Worker:
    """Works on the highest-priority unfinished datarun until no work is left.

    ``total_time`` (minutes) stops the worker itself; budgets stop dataruns. A worker with no
    slot to claim waits while others still run classifiers of its datarun: their leases either
    end in results or expire and get reclaimed here.
    """

    hub: ModelHub
    datarun_ids: list[int] | None = None
    total_time: float | None = None
    reporter: Reporter = field(default_factory=Reporter)
    cache: DataCache = field(default_factory=DataCache)
    results: list[ClassifierResult] = field(default_factory=list)
    _started: set[int] = field(default_factory=set)
    _leftovers: list[str] = field(default_factory=list)

    def run(self) -> None:
        """Work until no datarun has work left (or ``total_time`` is up).

        When the database or the object store goes away the worker waits for it with backoff
        (up to ``outage_patience_seconds``) instead of failing classifier after classifier.
        """
        silence_fit_warnings()
        stop_at = utcnow() + timedelta(minutes=self.total_time) if self.total_time else None
        try:
            while stop_at is None or utcnow() < stop_at:
                try:
                    if not self._round():
                        return
                except INFRASTRUCTURE_ERRORS as exc:
                    self._wait_for_infrastructure(exc)
        finally:
            close_fit_process()

    def _round(self) -> bool:
        """One classifier of the most urgent datarun with work; False when none has any."""
        dataruns = self.hub.dataruns_by_priority(self.datarun_ids)
        if not dataruns:
            self.reporter.no_dataruns()
            return False
        waiting_on = None
        for datarun in dataruns:
            state = self.step(datarun)
            if state == "trained":
                return True
            if state == "busy" and waiting_on is None:
                waiting_on = datarun
        if waiting_on is None:
            self.reporter.no_dataruns()
            return False
        self.reporter.waiting(waiting_on, self.hub.running_count(waiting_on.id))
        time.sleep(self.hub.settings.poll_seconds)
        return True

    def _wait_for_infrastructure(self, error: BaseException) -> None:
        """Back off (1 s, 2 s, ... 30 s) until the database and the store answer again."""
        started = time.monotonic()
        delay = 1.0
        while True:
            if time.monotonic() - started > self.hub.settings.outage_patience_seconds:
                raise error
            self.reporter.infrastructure_down(error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                self.hub.ping()
                self.hub.store.check()
            except INFRASTRUCTURE_ERRORS as exc:
                error = exc
                continue
            self.reporter.infrastructure_back()
            while self._leftovers:  # files of classifiers errored during the outage
                self.hub.store.delete_prefix(self._leftovers[-1])
                self._leftovers.pop()
            return

    def step(self, datarun: Datarun) -> str:
        """Train one classifier of ``datarun``: 'trained', 'busy' (others running) or 'done'."""
        if datarun.id not in self._started:
            self._started.add(datarun.id)
            self.reporter.datarun_started(datarun, self.hub.get_dataset(datarun.dataset_id))
        clock = Stopwatch()
        claim = next_claim(self.hub, datarun.id, clock)
        if claim is None:
            self._finish(datarun)
            return "busy" if self.hub.running_count(datarun.id) else "done"
        try:
            result = train_classifier(self.hub, claim, self.cache, self.reporter)
        except ArtifactStoreError as exc:
            leftover = record_infrastructure_failure(self.hub, claim, exc)
            if leftover is not None:
                self._leftovers.append(leftover)
            raise  # the store is down: wait for it before claiming more work
        except KeyboardInterrupt:
            self.hub.release(claim)
            raise
        result.timings = {**clock.laps, **result.timings}
        self.results.append(result)
        self._finish(datarun)
        give_back(collect=False)  # the round's buffers (pickles, parquet, queries): ~10 MB
        return "trained"

    def _finish(self, datarun: Datarun) -> None:
        if self.hub.finish_if_done(datarun.id):
            try:
                build_ensemble(self.hub, datarun.id)
                write_leaderboard(self.hub, datarun.id)
            except ArtifactStoreError as exc:  # derived from the ModelHub: `atm ensemble` redoes it
                log.warning(
                    "datarun %d is complete but its ensemble or leaderboard was not stored: %s",
                    datarun.id,
                    exc,
                )
            refreshed = self.hub.get_datarun(datarun.id)
            self.reporter.datarun_ended(refreshed, _end_reason(self.hub, refreshed))


def _end_reason(hub: ModelHub, datarun: Datarun) -> str:
    if not any(
        hp.status == HyperpartitionStatus.INCOMPLETE for hp in hub.hyperpartitions(datarun.id)
    ):
        return "no hyperpartition is left to explore"
    if datarun.deadline is not None and utcnow() >= datarun.deadline:
        return "the deadline has passed"
    if datarun.budget_type == BudgetType.WALLTIME:
        return "walltime budget has run out"
    return "classifier budget has run out"
