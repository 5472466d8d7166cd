"""Claiming work, leases and status transitions: written once, used by every worker.

* A classifier slot is *reserved* in one transaction that holds the datarun's lock (``SELECT
  ... FOR UPDATE`` on MySQL/PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), checks the budget and
  inserts the row, so N workers never overshoot a budget of B classifiers.
* The reserving worker holds a *lease*: a claim token and an expiry it renews while training.
  Every later update is conditional on the token, so a worker that lost its lease can never
  overwrite the work of the one that took over.
* A classifier whose lease expired (its worker was killed or lost) is *reclaimed* with ``FOR
  UPDATE SKIP LOCKED`` (a conditional update on SQLite) and re-run with the same
  hyperparameters, or recorded as ``errored`` ("worker lost") after ``max_attempts`` runs or
  once the budget's time is up. Nothing stays ``running`` forever.
* A datarun is completed by a conditional update, so exactly one worker completes it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from atm_core.modelhub.models import (
    BudgetType,
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    ErrorKind,
    Hyperpartition,
    HyperpartitionStatus,
    utcnow,
)


@dataclass(frozen=True)
class Claim:
    """The right to train one classifier: valid while ``token`` is the row's claim token."""

    classifier_id: int
    datarun_id: int
    token: str
    attempt: int
    finish_by: datetime | None = None  # the datarun's end, less the time its final refit needs
    rung: int = 0  # its fidelity (see atm_core/fidelity.py)
    method: str = ""
    seconds: float | None = None  # a time limit from the cost model (None: the default)


@dataclass(frozen=True)
class Outcome:
    """What a finished classifier wrote into the ModelHub."""

    model_location: str
    model_sha256: str
    metrics_location: str
    cv_judgment_metric: float
    cv_judgment_metric_stdev: float
    test_judgment_metric: float
    predictions_location: str | None = None
    fit_seconds: float | None = None  # the stored model's fit
    fit_rows: int | None = None
    evaluation_seconds: float | None = None  # how long the evaluation ran in the fit process


class DuplicateProposal(Exception):
    """The proposed configuration was taken meanwhile (by another worker); propose again."""


def config_key(values: dict[str, Any]) -> str:
    """Identity of a configuration, to refuse the same one twice in a hyperpartition."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _locks_rows(session: Session) -> bool:
    return session.get_bind().dialect.name in ("mysql", "mariadb", "postgresql")


def lock_datarun(session: Session, datarun_id: int) -> Datarun | None:
    """Load the datarun holding its row lock for the rest of the transaction."""
    query = select(Datarun).where(Datarun.id == datarun_id)
    if _locks_rows(session):
        query = query.with_for_update()
    return session.scalars(query).first()


def time_limit(datarun: Datarun) -> datetime | None:
    """When the datarun must stop starting classifiers (walltime budget and/or deadline)."""
    limits = []
    if datarun.budget_type == BudgetType.WALLTIME:
        started = datarun.start_time or utcnow()
        limits.append(started + timedelta(minutes=datarun.budget))
    if datarun.deadline is not None:
        limits.append(datarun.deadline)
    return min(limits) if limits else None


def has_budget(session: Session, datarun: Datarun, now: datetime | None = None) -> bool:
    now = now or utcnow()
    limit = time_limit(datarun)
    if limit is not None and now >= limit:
        return False
    if datarun.budget_type == BudgetType.CLASSIFIER:
        used = session.scalar(
            select(func.count(Classifier.id)).where(Classifier.datarun_id == datarun.id)
        )
        return (used or 0) < datarun.budget
    return True


def reserve(
    session: Session,
    datarun_id: int,
    hyperpartition_id: int,
    values: dict[str, Any],
    host: str,
    lease_seconds: float,
) -> Claim | None:
    """Insert a running classifier if the budget allows; None when no budget is left."""
    now = utcnow()
    datarun = lock_datarun(session, datarun_id)
    if datarun is None or datarun.status == DatarunStatus.COMPLETE:
        return None
    if not has_budget(session, datarun, now):
        return None
    partition = session.get(Hyperpartition, hyperpartition_id)
    if partition is None or partition.datarun_id != datarun_id:
        raise ValueError(f"hyperpartition {hyperpartition_id} is not part of datarun {datarun_id}")
    key = config_key(values)
    taken = session.scalar(
        select(Classifier.id).where(
            Classifier.datarun_id == datarun_id,
            Classifier.hyperpartition_id == hyperpartition_id,
            Classifier.config_key == key,
        )
    )
    if taken is not None or partition.status != HyperpartitionStatus.INCOMPLETE:
        raise DuplicateProposal
    token = str(uuid.uuid4())
    classifier = Classifier(
        datarun_id=datarun_id,
        hyperpartition_id=hyperpartition_id,
        method=partition.method,
        host=host,
        hyperparameters_values=values,
        config_key=key,
        start_time=now,
        status=ClassifierStatus.RUNNING,
        claim_token=token,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        attempts=1,
    )
    session.add(classifier)
    if datarun.status == DatarunStatus.PENDING:
        datarun.status = DatarunStatus.RUNNING
        datarun.start_time = datarun.start_time or now  # set at creation by `atm run`
    session.flush()
    return Claim(classifier.id, datarun_id, token, 1, method=partition.method)


def reclaim_expired(
    session: Session,
    datarun_id: int,
    host: str,
    lease_seconds: float,
    max_attempts: int,
    max_hyperpartition_errors: int,
) -> Claim | None:
    """Take over one classifier whose lease expired, or record it as lost; None if none expired."""
    now = utcnow()
    query = (
        select(Classifier)
        .where(
            Classifier.datarun_id == datarun_id,
            Classifier.status == ClassifierStatus.RUNNING,
            Classifier.lease_expires_at < now,
        )
        .order_by(Classifier.id)
        .limit(1)
    )
    if _locks_rows(session):
        query = query.with_for_update(skip_locked=True)
    classifier = session.scalars(query).first()
    if classifier is None:
        return None
    datarun = session.get(Datarun, datarun_id)
    limit = time_limit(datarun) if datarun is not None else None
    out_of_time = limit is not None and now >= limit
    if classifier.attempts >= max_attempts or out_of_time:
        reason = (
            "the datarun's time budget is spent"
            if out_of_time
            else f"{classifier.attempts} attempts"
        )
        _set_errored(
            session,
            classifier,
            f"worker lost: lease expired (last host {classifier.host}); not re-run: {reason}",
            ErrorKind.WORKER_LOST,
            max_hyperpartition_errors,
        )
        return reclaim_expired(
            session, datarun_id, host, lease_seconds, max_attempts, max_hyperpartition_errors
        )
    # A conditional update: on SQLite two reclaimers cannot both win the same row.
    token = str(uuid.uuid4())
    claimed = session.execute(
        update(Classifier)
        .where(Classifier.id == classifier.id, Classifier.claim_token == classifier.claim_token)
        .values(
            claim_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Classifier.attempts + 1,
            host=host,
            start_time=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        return None
    return Claim(
        classifier.id,
        datarun_id,
        token,
        classifier.attempts + 1,
        rung=classifier.rung,
        method=classifier.method or "",
    )


def renew_lease(session: Session, claim: Claim, lease_seconds: float) -> bool:
    """Extend the lease; False when the claim was lost (another worker took over)."""
    result = session.execute(
        update(Classifier)
        .where(
            Classifier.id == claim.classifier_id,
            Classifier.claim_token == claim.token,
            Classifier.status == ClassifierStatus.RUNNING,
        )
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def complete(session: Session, claim: Claim, outcome: Outcome) -> bool:
    """Record a stored, scored classifier; False when the claim was lost meanwhile."""
    result = session.execute(
        update(Classifier)
        .where(
            Classifier.id == claim.classifier_id,
            Classifier.claim_token == claim.token,
            Classifier.status == ClassifierStatus.RUNNING,
        )
        .values(
            status=ClassifierStatus.COMPLETE,
            end_time=utcnow(),
            lease_expires_at=None,
            model_location=outcome.model_location,
            model_sha256=outcome.model_sha256,
            metrics_location=outcome.metrics_location,
            predictions_location=outcome.predictions_location,
            cv_judgment_metric=outcome.cv_judgment_metric,
            cv_judgment_metric_stdev=outcome.cv_judgment_metric_stdev,
            test_judgment_metric=outcome.test_judgment_metric,
            fit_seconds=outcome.fit_seconds,
            fit_rows=outcome.fit_rows,
            evaluation_seconds=outcome.evaluation_seconds,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1 or _already(session, claim, ClassifierStatus.COMPLETE)


def _already(session: Session, claim: Claim, status: ClassifierStatus) -> bool:
    """Whether this claim already recorded ``status``: a retry after a lost acknowledgement."""
    return (
        session.scalar(
            select(Classifier.id).where(
                Classifier.id == claim.classifier_id,
                Classifier.claim_token == claim.token,
                Classifier.status == status,
            )
        )
        is not None
    )


def fail(
    session: Session,
    claim: Claim,
    message: str,
    max_hyperpartition_errors: int,
    kind: ErrorKind = ErrorKind.MODEL,
    seconds: float | None = None,
) -> bool:
    """Record a classifier that could not be trained (``seconds``: how long its evaluation ran
    before it failed or was stopped); False when the claim was lost meanwhile."""
    classifier = session.scalars(
        select(Classifier).where(
            Classifier.id == claim.classifier_id,
            Classifier.claim_token == claim.token,
            Classifier.status == ClassifierStatus.RUNNING,
        )
    ).first()
    if classifier is None:
        return _already(session, claim, ClassifierStatus.ERRORED)
    classifier.evaluation_seconds = seconds
    _set_errored(session, classifier, message, kind, max_hyperpartition_errors)
    return True


def _set_errored(
    session: Session,
    classifier: Classifier,
    message: str,
    kind: ErrorKind,
    max_hyperpartition_errors: int,
) -> None:
    classifier.status = ClassifierStatus.ERRORED
    classifier.error_message = message
    classifier.error_kind = kind
    classifier.end_time = utcnow()
    classifier.lease_expires_at = None
    session.flush()
    if kind == ErrorKind.INFRASTRUCTURE:
        return  # an outage says nothing about the hyperpartition
    errors = session.scalar(
        select(func.count(Classifier.id)).where(
            Classifier.hyperpartition_id == classifier.hyperpartition_id,
            Classifier.status == ClassifierStatus.ERRORED,
            Classifier.error_kind != ErrorKind.INFRASTRUCTURE,
        )
    )
    if (errors or 0) > max_hyperpartition_errors:
        session.execute(
            update(Hyperpartition)
            .where(
                Hyperpartition.id == classifier.hyperpartition_id,
                Hyperpartition.status == HyperpartitionStatus.INCOMPLETE,
            )
            .values(status=HyperpartitionStatus.ERRORED)
            .execution_options(synchronize_session=False)
        )


def release(session: Session, claim: Claim) -> bool:
    """Give back a slot whose training was interrupted (Ctrl+C): row deleted, budget back."""
    result = session.execute(
        delete(Classifier)
        .where(
            Classifier.id == claim.classifier_id,
            Classifier.claim_token == claim.token,
            Classifier.status == ClassifierStatus.RUNNING,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_exhausted(session: Session, hyperpartition_ids: list[int]) -> None:
    """Partitions whose every configuration has been taken are ``gridding_done``."""
    if hyperpartition_ids:
        session.execute(
            update(Hyperpartition)
            .where(
                Hyperpartition.id.in_(hyperpartition_ids),
                Hyperpartition.status == HyperpartitionStatus.INCOMPLETE,
            )
            .values(status=HyperpartitionStatus.GRIDDING_DONE)
            .execution_options(synchronize_session=False)
        )


def running_count(session: Session, datarun_id: int) -> int:
    return (
        session.scalar(
            select(func.count(Classifier.id)).where(
                Classifier.datarun_id == datarun_id, Classifier.status == ClassifierStatus.RUNNING
            )
        )
        or 0
    )


def finish_if_done(session: Session, datarun_id: int, reserve_seconds: float = 0.0) -> bool:
    """Complete the datarun when nothing runs and no budget or partition is left (its time
    budget counted as over ``reserve_seconds`` early: the final refit's); True once."""
    datarun = lock_datarun(session, datarun_id)
    if datarun is None or datarun.status == DatarunStatus.COMPLETE:
        return False
    if running_count(session, datarun_id):
        return False
    open_partitions = session.scalar(
        select(func.count(Hyperpartition.id)).where(
            Hyperpartition.datarun_id == datarun_id,
            Hyperpartition.status == HyperpartitionStatus.INCOMPLETE,
        )
    )
    reserved = utcnow() + timedelta(seconds=reserve_seconds)
    if has_budget(session, datarun, reserved):
        if open_partitions:
            return False
        from atm_core.modelhub.promotion import due  # (it builds on this module)

        if datarun.top_rung and due(session, datarun):
            return False
    finished = session.execute(
        update(Datarun)
        .where(Datarun.id == datarun_id, Datarun.status != DatarunStatus.COMPLETE)
        .values(status=DatarunStatus.COMPLETE, end_time=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    return finished == 1
