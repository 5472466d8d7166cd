"""One classifier: train -> score -> store -> record, for a claim the driver reserved.

Every front-end's execution (the CLI worker's fit process, a Prefect task, a Dask worker, a
test in-process) calls :func:`train_classifier`. Model errors are recorded on the classifier
and return normally; object-store failures (after the store's own retries) raise
:class:`ArtifactStoreError` for the caller to retry or record (:func:`record_failure`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from datetime import datetime
from functools import partial
from typing import Any

from sklearn.base import clone

from atm_core.artifacts import ArtifactStore, ArtifactStoreError, serialize_model
from atm_core.data.dataset import FeatureSchema
from atm_core.data.split import TrainTest, load_train_test
from atm_core.ensemble import CANDIDATES
from atm_core.errors import DataError, DataUnavailable
from atm_core.evaluation import Evaluation, evaluate, silence_fit_warnings
from atm_core.fidelity import at_rung
from atm_core.isolation import ChildFailed, FitCall, FitProcess, TimeLimitExceeded
from atm_core.memory import configure_allocators, give_back
from atm_core.metric_names import resolve_metric
from atm_core.modelhub.claims import Claim, Outcome, time_limit
from atm_core.modelhub.hub import DATABASE_ERRORS, ModelHub
from atm_core.modelhub.models import (
    BudgetType,
    ClassifierStatus,
    Datarun,
    Dataset,
    ErrorKind,
    utcnow,
)
from atm_core.modelhub.reads import ClaimContext, judgment
from atm_core.pipeline import build_pipeline
from atm_core.reporting import ClassifierResult, Reporter

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


def record_failure(hub: ModelHub, claim: Claim, error: BaseException) -> str | None:
    """Record a classifier whose run raised (after any retries), whatever the cause.

    An infrastructure error errors the classifier as such (it does not count against its
    hyperpartition) and removes its files; anything else is the classifier's own error, with
    its traceback. Returns the key of files that could not be removed because the store is
    down too, for the caller to remove once it is back (None when nothing is left behind).
    """
    if not is_infrastructure_error(error):
        hub.fail_classifier(claim, "".join(traceback.format_exception(error)))
        return None
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

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` measured elsewhere as ``name``; the next lap starts now."""
        self.laps[name] = self.laps.get(name, 0.0) + seconds
        self._last = time.perf_counter()


_fit_processes = threading.local()


def fit_process() -> FitProcess:
    """This thread's fit process: one per thread, kept from one classifier to the next."""
    process = getattr(_fit_processes, "process", None)
    if process is None:
        process = _fit_processes.process = FitProcess()
    return process


def close_fit_process() -> None:
    """End this thread's fit process and reap it (a driver that is done leaves no child)."""
    process = getattr(_fit_processes, "process", None)
    if process is not None:
        process.close()


class DataCache:
    """Each process reads and splits a dataset once, not once per classifier."""

    def __init__(self, max_items: int = 4) -> None:
        self._items: OrderedDict[tuple, TrainTest] = OrderedDict()
        self._lock = threading.Lock()
        self._max_items = max_items

    def get(
        self,
        dataset: Dataset,
        datarun: Datarun,
        rung: int = 0,
        store: ArtifactStore | None = None,
    ) -> TrainTest:
        """The datarun's split as ``rung`` sees it (see :mod:`atm_core.fidelity`), read
        through ``store``'s parsed copy of the dataset when given
        (:mod:`atm_core.data.parsed_cache`)."""
        if rung < datarun.top_rung:
            full = self.get(dataset, datarun, datarun.top_rung, store)
            key = (dataset.id, datarun.seed, datarun.test_size, "rung", rung, datarun.top_rung)
            with self._lock:
                if key not in self._items:
                    self._keep(key, at_rung(full, rung, datarun.top_rung, datarun.seed))
                self._items.move_to_end(key)
                return self._items[key]
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
                FeatureSchema.from_json(dataset.feature_schema),
                dataset.content_hash,
                datarun.seed,
                datarun.test_size,
                datarun.cv_folds,
                store,
            )
            self._keep(key, data)
            give_back(collect=False)  # the file's bytes and parsing buffers (100k rows: 10 MB)
            return data

    def clear(self) -> None:
        """Forget every split (a datarun is finalizing: its refit reads all rows itself)."""
        with self._lock:
            self._items.clear()
        give_back()

    def _keep(self, key: tuple, data: TrainTest) -> None:
        self._items[key] = data
        if len(self._items) > self._max_items:
            self._items.popitem(last=False)


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


def fit_and_serialize(
    data: TrainTest, template: Any, metric: str, seed: int
) -> tuple[Evaluation, bytes]:
    """Cross-validate, refit and pickle ``template``'s configuration (an unfitted pipeline):
    the part of a classifier a time limit may stop, run in the fit process."""
    silence_fit_warnings()  # the flow's task threads fork fit processes too
    evaluation = evaluate(partial(clone, template), data, metric, seed)
    blob = serialize_model(evaluation.model)
    evaluation.model = None  # travels as the pickle only
    return evaluation, blob


def classifier_time_limit(
    datarun: Datarun,
    now: datetime | None = None,
    finish_by: datetime | None = None,
    predicted: float | None = None,
) -> float | None:
    """Seconds the next classifier of ``datarun`` may run; None means no limit.

    An explicit ``time_limit`` wins (0 turns limits off); then the limit the cost model
    ``predicted`` from the datarun's finished classifiers (see :mod:`atm_core.cost`);
    otherwise a quarter of a walltime budget (at least 10 s) or 10 minutes for a classifier
    budget. Never past the datarun's own end (walltime or deadline), less the time kept for
    its final refit (``finish_by``, from the claim), so a walltime datarun ends on time.
    """
    if datarun.time_limit is not None:
        limit = datarun.time_limit or None
    elif predicted is not None:
        limit = predicted
    elif datarun.budget_type == BudgetType.WALLTIME:
        limit = max(MIN_TIME_LIMIT, WALLTIME_SHARE * datarun.budget * 60)
    else:
        limit = CLASSIFIER_BUDGET_TIME_LIMIT
    end = time_limit(datarun)
    if finish_by is not None:
        end = finish_by if end is None else min(end, finish_by)
    if end is not None:
        remaining = max((end - (now or utcnow())).total_seconds(), MIN_REMAINING)
        limit = remaining if limit is None else min(limit, remaining)
    return limit


def train_classifier(
    hub: ModelHub,
    claim: Claim,
    cache: DataCache,
    reporter: Reporter | None = None,
    *,
    isolated: bool = True,
) -> ClassifierResult:
    """Train, score and store the claimed classifier. Safe to call again with the same claim.

    ``isolated``: fit in this thread's fit process, stopped at the classifier's time limit;
    otherwise in this process, without a limit. The caller reports the result.
    """
    training = start_training(hub, claim, cache, isolated=isolated)
    training.announce(reporter or Reporter())
    return training.finish()


def start_training(
    hub: ModelHub, claim: Claim, cache: DataCache, *, isolated: bool = True
) -> Training:
    """Load the claimed classifier's data and hand its fit to this thread's fit process (queued
    behind the fits already there); :meth:`Training.finish` scores, stores and records it."""
    clock = Stopwatch()
    context = hub.claim_context(claim)
    classifier, datarun, dataset = context.classifier, context.datarun, context.dataset
    result = ClassifierResult(
        classifier_id=classifier.id,
        datarun_id=datarun.id,
        method=context.partition.method,
        values=context.values,
        status="skipped",
        score_target=datarun.score_target.value,
    )
    training = Training(hub, claim, context, result, clock)
    if classifier.claim_token != claim.token:
        result.status = "lost"
        return training
    if classifier.status != ClassifierStatus.RUNNING:
        result.status = classifier.status.value  # a retry of work already recorded
        return training
    try:
        data = cache.get(dataset, datarun, classifier.rung, hub.store)
    except DataError as exc:  # not the model's fault: leave the datarun to a worker that can
        message = f"datarun {datarun.id}: this worker cannot read its data: {exc}"
        raise DataUnavailable(message) from None
    result.timings = clock.lap("load")
    training.loaded = True
    training.heartbeat = Heartbeat(hub, claim).__enter__()
    try:
        result.metric = resolve_metric(datarun.metric, dataset.k_classes)
        # Built here, so that the estimator's modules are imported by this process and
        # inherited by the fit process it forks; the pipeline itself travels pickled.
        template = build_pipeline(
            context.partition.estimator_class,
            result.values,
            FeatureSchema.from_json(dataset.feature_schema),
            random_state=datarun.seed,
            n_jobs=hub.settings.threads,
        )
        seconds, until = fit_limits(datarun, claim) if isolated else (None, None)
        training.call = training.process.submit(
            fit_and_serialize,
            (template, result.metric, datarun.seed),
            data,
            seconds,
            hub.settings.threads,
            until,
        )
        clock.lap("fit")  # building and sending it; the fit's own time is added when it ends
    except BaseException as exc:
        training.failed(exc)
    return training


def fit_limits(datarun: Datarun, claim: Claim) -> tuple[float | None, float | None]:
    """(seconds the claimed classifier's fit may run once started, the ``time.monotonic()``
    it may not run past: the datarun's end), see :func:`classifier_time_limit`."""
    now = utcnow()
    seconds = classifier_time_limit(datarun, now, claim.finish_by, claim.seconds)
    end = time_limit(datarun)
    if claim.finish_by is not None:
        end = claim.finish_by if end is None else min(end, claim.finish_by)
    if end is None:
        return seconds, None
    return seconds, time.monotonic() + max((end - now).total_seconds(), MIN_REMAINING)


class Training:
    """A claimed classifier on its way: its fit under way in the fit process (or already
    failed, or nothing to do), with its lease kept alive until :meth:`finish`."""

    def __init__(
        self,
        hub: ModelHub,
        claim: Claim,
        context: ClaimContext,
        result: ClassifierResult,
        clock: Stopwatch,
    ) -> None:
        self.hub, self.claim, self.context, self.result, self.clock = (
            hub,
            claim,
            context,
            result,
            clock,
        )
        self.process = fit_process()
        self.heartbeat: Heartbeat | None = None
        self.call: FitCall | None = None
        self.loaded = False
        self.announced = False

    def announce(self, reporter: Reporter) -> None:
        """Report the classifier as started (once), when its fit starts."""
        if self.loaded and not self.announced:
            reporter.classifier_started(self.claim, self.result.method, self.result.values)
        self.announced = True

    def failed(self, error: BaseException, seconds: float | None = None) -> None:
        """The fit could not run (or was stopped after ``seconds``): record the classifier's
        error."""
        self.stop()
        if not isinstance(error, Exception):
            raise error  # Ctrl+C: the driver releases the claim
        result = self.result
        isolated = isinstance(error, TimeLimitExceeded | ChildFailed)
        result.error = str(error) if isolated else "".join(traceback.format_exception(error))
        recorded = self.hub.fail_classifier(self.claim, result.error, seconds=seconds)
        result.status = "errored" if recorded else "lost"

    def stop(self) -> None:
        """Stop renewing the lease (the classifier is recorded, or abandoned)."""
        if self.heartbeat is not None:
            self.heartbeat.__exit__()
            self.heartbeat = None

    def finish(self) -> ClassifierResult:
        """Wait for the fit, then store the model's files and record the classifier."""
        if self.call is None:  # nothing to fit, or it failed already
            return self.result
        call, self.call = self.call, None
        try:
            evaluation, blob = self.process.result(call)  # type: ignore[misc]
        except BaseException as exc:
            self.failed(exc, call.seconds_running())
            return self.result
        finally:
            self.clock.add("fit", call.seconds_running())
        try:
            return self._record(evaluation, blob, call.seconds_running())
        finally:
            self.stop()

    def _record(self, evaluation: Evaluation, blob: bytes, seconds: float) -> ClassifierResult:
        hub, claim, clock, result = self.hub, self.claim, self.clock, self.result
        classifier, datarun = self.context.classifier, self.context.datarun
        # Predictions only matter to a classifier that may end among the ensemble's candidates:
        # with CANDIDATES complete classifiers ahead of it already, it never will (the count
        # only grows), and its predictions.parquet (a third write) is left out.
        score = evaluation.judgment(datarun.score_target.value)
        standing = hub.standing(datarun, score)
        clock.lap("record")
        # ensembles are chosen among full evaluations: the rungs below store no predictions
        candidate = classifier.rung >= datarun.top_rung and standing.ahead < CANDIDATES
        predictions = evaluation.predictions if candidate else None
        prefix = hub.store.classifier_prefix(datarun.id, classifier.id, claim.attempt)
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
            fit_seconds=evaluation.fit_seconds,
            fit_rows=evaluation.fit_rows,
            evaluation_seconds=seconds,
        )
        assert self.heartbeat is not None
        completed = not self.heartbeat.lost and hub.complete_classifier(claim, outcome)
        clock.lap("record")
        if not completed:
            hub.store.delete_prefix(prefix)  # another worker owns this classifier now
            result.status = "lost"
            return result
        result.status = "complete"
        result.cv_mean = evaluation.cv_judgment_metric
        result.cv_stdev = evaluation.cv_judgment_metric_stdev
        result.test = evaluation.test_judgment_metric
        result.judgment = score
        result.model_location = files.model.location
        result.metrics_location = files.metrics_location
        return result
