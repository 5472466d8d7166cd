"""Promotions of successive halving, decided in the claim transaction.

Under the datarun's lock (as a reservation is), the highest rung first: a configuration that
finished at rung r and ranks in the top 1/ETA of its method's configurations finished there is
run again at rung r + 1, unless it already was. Many workers and flow runs share the decision
through the ModelHub, and a promotion is a classifier row like any other, so budgets stay
exact.

Configurations compete with their own method's: methods gain unequally from more rows (on
flights, the best random forest was judged above the best boosting on 3,111 rows and below it
on 28,000), so methods are compared at the rungs above, and every method's best climbs.

The leader of a rung (the best configuration finished there, of any method) moves up at once,
before its method has ETA configurations there: a search reaches full evaluations early and
keeps doing so as its leader changes. Without it a method needs ETA ** rung configurations to
put one at the top rung: at 600 s on flights, after 12 boosting configurations, none had
reached it, and the final model, one random forest, scored 0.7904 test AUC (0.7942 at 60 s).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from atm_core.modelhub.claims import Claim, has_budget, lock_datarun
from atm_core.modelhub.models import (
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    Hyperpartition,
    HyperpartitionStatus,
    utcnow,
)
from atm_core.modelhub.reads import judgment_expression
from atm_core.rungs import promotion_quota

Affordable = Callable[[str, int], bool]  # (method, rung): can it finish in the time left?


def due(session: Session, datarun: Datarun) -> bool:
    """Whether some configuration has earned a rung it has not been run at yet."""
    return any(_candidates(session, datarun, rung) for rung in range(datarun.top_rung))


def _no_new_configurations(session: Session, datarun: Datarun) -> bool:
    """Every hyperpartition exhausted or errored: nothing new will reach a rung."""
    open_partitions = session.scalar(
        select(func.count(Hyperpartition.id)).where(
            Hyperpartition.datarun_id == datarun.id,
            Hyperpartition.status == HyperpartitionStatus.INCOMPLETE,
        )
    )
    return not open_partitions


def _candidates(session: Session, datarun: Datarun, rung: int) -> list[Classifier]:
    """The configurations finished at ``rung`` that rank in the top 1/ETA of their method's
    there, or lead the rung, and have no row at the rung above yet, best first. Once no new
    configuration can come (a small space, all taken), each method's best of a rung moves up
    even if fewer than ETA finished there: every search then ends with full evaluations."""
    finished = session.scalars(
        select(Classifier)
        .join(Hyperpartition, Hyperpartition.id == Classifier.hyperpartition_id)
        .where(
            Classifier.datarun_id == datarun.id,
            Classifier.rung == rung,
            Classifier.status == ClassifierStatus.COMPLETE,
            Hyperpartition.status != HyperpartitionStatus.ERRORED,
        )
        .order_by(judgment_expression(datarun.score_target).desc(), Classifier.id)
    ).all()
    if not finished:
        return []
    by_method: dict[str | None, list[Classifier]] = {}
    for classifier in finished:
        by_method.setdefault(classifier.method, []).append(classifier)
    quotas = {method: promotion_quota(len(rows)) for method, rows in by_method.items()}
    if not all(quotas.values()) and _no_new_configurations(session, datarun):
        quotas = {method: max(1, quota) for method, quota in quotas.items()}
    above = set(
        session.execute(
            select(Classifier.hyperpartition_id, Classifier.config_key).where(
                Classifier.datarun_id == datarun.id, Classifier.rung == rung + 1
            )
        ).all()
    )
    earned = {c.id for method, rows in by_method.items() for c in rows[: quotas[method]]}
    earned.add(finished[0].id)  # the rung's leader
    return [
        c for c in finished if c.id in earned and (c.hyperpartition_id, c.config_key) not in above
    ]


def promote(
    session: Session,
    datarun_id: int,
    host: str,
    lease_seconds: float,
    affordable: Affordable | None = None,
) -> Claim | None:
    """Reserve the best configuration due a promotion; None when none is (or no budget)."""
    now = utcnow()
    datarun = lock_datarun(session, datarun_id)
    if datarun is None or datarun.status == DatarunStatus.COMPLETE or not datarun.top_rung:
        return None
    if not has_budget(session, datarun, now):
        return None
    for rung in range(datarun.top_rung - 1, -1, -1):
        for candidate in _candidates(session, datarun, rung):
            if affordable is not None and not affordable(candidate.method or "", rung + 1):
                continue
            token = str(uuid.uuid4())
            promoted = Classifier(
                datarun_id=datarun_id,
                hyperpartition_id=candidate.hyperpartition_id,
                method=candidate.method,
                rung=rung + 1,
                host=host,
                hyperparameters_values=candidate.hyperparameters_values,
                config_key=candidate.config_key,
                start_time=now,
                status=ClassifierStatus.RUNNING,
                claim_token=token,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=1,
            )
            session.add(promoted)
            session.flush()
            return Claim(
                promoted.id, datarun_id, token, 1, rung=rung + 1, method=candidate.method or ""
            )
    return None
