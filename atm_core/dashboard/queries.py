"""The dashboard's reads: a few aggregate SQL queries per page, never one query per row.

Every function takes an open session (``hub.transaction()``), so one page reads one consistent
snapshot, and returns plain JSON-ready values. A datarun of 5,000 classifiers is a handful of
``GROUP BY`` queries and one column scan of its classifiers (``benchmarks/dashboard_speed.py``).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from atm_core.modelhub.models import (
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    Dataset,
    Ensemble,
    Hyperpartition,
    HyperpartitionStatus,
    ScoreTarget,
)
from atm_core.modelhub.reads import (
    DatarunProgress,
    found,
    judgment,
    judgment_expression,
    partition_label,
    usable,
)
from atm_core.progress import budget_progress

COMPLETE = ClassifierStatus.COMPLETE
ERRORED = ClassifierStatus.ERRORED
RUNNING = ClassifierStatus.RUNNING
_SECRET_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e-?\d+)?")


# -- values -----------------------------------------------------------------------------------
def redact(text: str | None) -> str | None:
    """``scheme://user:password@host`` with the password masked: data paths and error messages
    are shown, and either may hold a URL with credentials."""
    if text is None:
        return None
    return _SECRET_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def iso(moment: datetime | None) -> str | None:
    """A naive-UTC time as the pages show and plot it (``2026-05-01 12:00:03``)."""
    return None if moment is None else moment.isoformat(sep=" ", timespec="seconds")


def number(value: float | None) -> float | None:
    """A float for JSON: NaN and infinities become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def partition_labels(session: Session, datarun_id: int) -> dict[int, str]:
    """``svm(kernel=rbf)`` by hyperpartition id, as ``atm leaderboard`` names them."""
    return {
        partition.id: partition_label(partition)
        for partition in session.scalars(
            select(Hyperpartition).where(Hyperpartition.datarun_id == datarun_id)
        )
    }


# -- dataruns ---------------------------------------------------------------------------------
def list_dataruns(
    session: Session,
    status: DatarunStatus | None = None,
    dataset_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of dataruns, newest first, with their progress, best score and method mix;
    and how many dataruns match the filters."""
    conditions = []
    if status is not None:
        conditions.append(Datarun.status == status)
    if dataset_id is not None:
        conditions.append(Datarun.dataset_id == dataset_id)
    total = session.scalar(select(func.count(Datarun.id)).where(*conditions)) or 0
    rows = session.execute(
        select(Datarun, Dataset.name)
        .join(Dataset, Datarun.dataset_id == Dataset.id)
        .where(*conditions)
        .order_by(Datarun.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return _summaries(session, [(datarun, name) for datarun, name in rows]), total


def datarun_summary(session: Session, datarun_id: int) -> dict[str, Any]:
    """One datarun as the list shows it, plus its configuration and best classifier."""
    datarun = found(session, Datarun, datarun_id)
    dataset = session.get(Dataset, datarun.dataset_id)
    summary = _summaries(session, [(datarun, dataset.name)])[0]
    best = session.execute(
        select(Classifier.id)
        .where(Classifier.datarun_id == datarun_id, *usable())
        .order_by(judgment_expression(datarun.score_target).desc(), Classifier.id)
        .limit(1)
    ).scalar()
    summary.update(
        best_classifier_id=best,
        selector=datarun.selector,
        tuner=datarun.tuner,
        r_minimum=datarun.r_minimum,
        k_window=datarun.k_window,
        gridding=datarun.gridding,
        seed=datarun.seed,
        cv_folds=datarun.cv_folds,
        time_limit=datarun.time_limit,
        warm_start=datarun.warm_start,
        test_size=datarun.test_size,
        deadline=iso(datarun.deadline),
    )
    return summary


def _summaries(session: Session, rows: list[tuple[Datarun, str]]) -> list[dict[str, Any]]:
    ids = [datarun.id for datarun, _ in rows]
    if not ids:
        return []
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for datarun_id, status, count in session.execute(
        select(Classifier.datarun_id, Classifier.status, func.count(Classifier.id))
        .where(Classifier.datarun_id.in_(ids))
        .group_by(Classifier.datarun_id, Classifier.status)
    ):
        counts[datarun_id][ClassifierStatus(status).value] = count
    targets = list(ScoreTarget)
    best: dict[int, dict[str, float | None]] = {}
    for datarun_id, *values in session.execute(
        select(Classifier.datarun_id, *[func.max(judgment_expression(t)) for t in targets])
        .where(Classifier.datarun_id.in_(ids), *usable())
        .group_by(Classifier.datarun_id)
    ):
        best[datarun_id] = {t.value: number(v) for t, v in zip(targets, values, strict=True)}
    lost = dict(
        session.execute(
            select(Classifier.datarun_id, func.count(Classifier.id))
            .where(Classifier.datarun_id.in_(ids), Classifier.files_lost_at.is_not(None))
            .group_by(Classifier.datarun_id)
        ).all()
    )
    methods: dict[int, dict[str, int]] = defaultdict(dict)
    for datarun_id, method in session.execute(
        select(Hyperpartition.datarun_id, Hyperpartition.method)
        .where(Hyperpartition.datarun_id.in_(ids))
        .distinct()
    ):
        methods[datarun_id].setdefault(method, 0)
    for datarun_id, method, count in session.execute(
        select(Classifier.datarun_id, Hyperpartition.method, func.count(Classifier.id))
        .join(Hyperpartition, Classifier.hyperpartition_id == Hyperpartition.id)
        .where(Classifier.datarun_id.in_(ids))
        .group_by(Classifier.datarun_id, Hyperpartition.method)
    ):
        methods[datarun_id][method] = count
    return [
        _summary(datarun, name, counts[datarun.id], best.get(datarun.id, {}), methods[datarun.id])
        | {"files_lost": lost.get(datarun.id, 0)}
        for datarun, name in rows
    ]


def _summary(
    datarun: Datarun,
    dataset_name: str,
    counts: Counter[str],
    best: dict[str, float | None],
    methods: dict[str, int],
) -> dict[str, Any]:
    total = sum(counts.values())
    spent = budget_progress(DatarunProgress(datarun, None, total))
    return {
        "id": datarun.id,
        "dataset_id": datarun.dataset_id,
        "dataset": dataset_name,
        "description": datarun.description,
        "status": datarun.status.value,
        "priority": datarun.priority,
        "budget_type": datarun.budget_type.value,
        "budget": datarun.budget,
        "spent": round(spent.done, 2),
        "unit": spent.unit,
        "percent": round(spent.percent, 1),
        "metric": datarun.metric,
        "score_target": datarun.score_target.value,
        "created_at": iso(datarun.created_at),
        "start_time": iso(datarun.start_time),
        "end_time": iso(datarun.end_time),
        "classifiers": {status.value: counts.get(status.value, 0) for status in ClassifierStatus},
        "classifiers_total": total,
        "best_score": best.get(datarun.score_target.value),
        "methods": dict(sorted(methods.items(), key=lambda item: (-item[1], item[0]))),
    }


# -- one datarun's classifiers ----------------------------------------------------------------
class Point(NamedTuple):
    """One classifier of a datarun, as the plots need it."""

    id: int
    hyperpartition_id: int
    method: str
    status: str
    judgment: float | None
    start_time: datetime | None
    end_time: datetime | None


def classifier_points(session: Session, datarun: Datarun) -> list[Point]:
    """Every classifier of the datarun in one column scan, in id order."""
    score = judgment_expression(datarun.score_target)
    rows = session.execute(
        select(
            Classifier.id,
            Classifier.hyperpartition_id,
            Hyperpartition.method,
            Classifier.status,
            case((Classifier.status == COMPLETE, score)),
            Classifier.start_time,
            Classifier.end_time,
        )
        .join(Hyperpartition, Classifier.hyperpartition_id == Hyperpartition.id)
        .where(Classifier.datarun_id == datarun.id)
        .order_by(Classifier.id)
    )
    return [
        Point(i, hp, method, ClassifierStatus(status).value, number(score), start, end)
        for i, hp, method, status, score, start, end in rows
    ]


def hyperpartitions(session: Session, datarun: Datarun) -> list[dict[str, Any]]:
    """Each hyperpartition with its classifier counts, best and mean score and status: what
    the selector chose from."""
    score = judgment_expression(datarun.score_target)
    complete = Classifier.status == COMPLETE
    stats = {
        row[0]: row[1:]
        for row in session.execute(
            select(
                Classifier.hyperpartition_id,
                func.count(Classifier.id),
                func.count(case((complete, 1))),
                func.count(case((Classifier.status == ERRORED, 1))),
                func.max(case((complete, score))),
                func.avg(case((complete, score))),
            )
            .where(Classifier.datarun_id == datarun.id)
            .group_by(Classifier.hyperpartition_id)
        )
    }
    partitions = []
    for partition in session.scalars(
        select(Hyperpartition)
        .where(Hyperpartition.datarun_id == datarun.id)
        .order_by(Hyperpartition.id)
    ):
        count, done, errored, best, mean = stats.get(partition.id, (0, 0, 0, None, None))
        partitions.append(
            {
                "id": partition.id,
                "method": partition.method,
                "label": partition_label(partition),
                "categoricals": {name: value for name, value in partition.categoricals},
                "status": HyperpartitionStatus(partition.status).value,
                "classifiers": count,
                "complete": done,
                "errored": errored,
                "running": count - done - errored,
                "best": number(best),
                "mean": number(mean),
            }
        )
    return partitions


def leaderboard(
    session: Session, datarun: Datarun, limit: int | None = 20, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Complete classifiers ranked as ``atm leaderboard`` ranks them (judgment metric, then
    id; those whose files ``atm verify`` found lost left out), one page of them; and how many
    there are."""
    score = judgment_expression(datarun.score_target)
    where = (Classifier.datarun_id == datarun.id, *usable())
    total = session.scalar(select(func.count(Classifier.id)).where(*where)) or 0
    labels = partition_labels(session, datarun.id)
    rows = session.execute(
        select(
            Classifier.id,
            Hyperpartition.method,
            Classifier.hyperpartition_id,
            score,
            Classifier.cv_judgment_metric,
            Classifier.cv_judgment_metric_stdev,
            Classifier.test_judgment_metric,
            Classifier.hyperparameters_values,
            Classifier.start_time,
            Classifier.end_time,
        )
        .join(Hyperpartition, Classifier.hyperpartition_id == Hyperpartition.id)
        .where(*where)
        .order_by(score.desc(), Classifier.id)
        .limit(limit)
        .offset(offset)
    )
    board = [
        {
            "rank": offset + index + 1,
            "classifier_id": cid,
            "method": method,
            "hyperpartition": labels[hp_id],
            "judgment_metric": number(score),
            "cv_judgment_metric": number(cv),
            "cv_judgment_metric_stdev": number(stdev),
            "test_judgment_metric": number(test),
            "hyperparameters": values,
            "seconds": seconds_between(start, end),
        }
        for index, (cid, method, hp_id, score, cv, stdev, test, values, start, end) in (
            enumerate(rows)
        )
    ]
    return board, total


def classifiers(
    session: Session,
    datarun_id: int,
    status: ClassifierStatus | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a datarun's classifiers in id order, whatever their status."""
    datarun = found(session, Datarun, datarun_id)
    conditions = [Classifier.datarun_id == datarun_id]
    if status is not None:
        conditions.append(Classifier.status == status)
    total = session.scalar(select(func.count(Classifier.id)).where(*conditions)) or 0
    labels = partition_labels(session, datarun_id)
    rows = session.execute(
        select(Classifier, Hyperpartition.method)
        .join(Hyperpartition, Classifier.hyperpartition_id == Hyperpartition.id)
        .where(*conditions)
        .order_by(Classifier.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return [
        classifier_record(c, method, labels[c.hyperpartition_id], datarun) for c, method in rows
    ], total


def classifier_record(
    classifier: Classifier, method: str, label: str, datarun: Datarun
) -> dict[str, Any]:
    return {
        "id": classifier.id,
        "datarun_id": classifier.datarun_id,
        "hyperpartition_id": classifier.hyperpartition_id,
        "method": method,
        "hyperpartition": label,
        "status": classifier.status.value,
        "judgment_metric": number(judgment(classifier, datarun.score_target)),
        "cv_judgment_metric": number(classifier.cv_judgment_metric),
        "cv_judgment_metric_stdev": number(classifier.cv_judgment_metric_stdev),
        "test_judgment_metric": number(classifier.test_judgment_metric),
        "hyperparameters": classifier.hyperparameters_values,
        "start_time": iso(classifier.start_time),
        "end_time": iso(classifier.end_time),
        "seconds": seconds_between(classifier.start_time, classifier.end_time),
        "attempts": classifier.attempts,
        "host": classifier.host,
        "error_kind": classifier.error_kind.value if classifier.error_kind else None,
        "error": error_summary(classifier.error_message),
        "files_lost_at": iso(classifier.files_lost_at),
    }


def classifier_detail(session: Session, classifier_id: int) -> dict[str, Any]:
    """A classifier with where its files are and its whole error message."""
    classifier = found(session, Classifier, classifier_id)
    datarun = session.get(Datarun, classifier.datarun_id)
    partition = session.get(Hyperpartition, classifier.hyperpartition_id)
    dataset = session.get(Dataset, datarun.dataset_id)
    record = classifier_record(classifier, partition.method, partition_label(partition), datarun)
    record.update(
        estimator_class=partition.estimator_class,
        metric=datarun.metric,
        score_target=datarun.score_target.value,
        dataset_id=dataset.id,
        dataset=dataset.name,
        classes=list(dataset.class_labels),
        model_location=redact(classifier.model_location),
        model_sha256=classifier.model_sha256,
        final_model_location=redact(classifier.final_model_location),
        final_model_sha256=classifier.final_model_sha256,
        metrics_location=redact(classifier.metrics_location),
        predictions_location=redact(classifier.predictions_location),
        error_message=redact(classifier.error_message),
    )
    return record


# -- errors and ensembles ---------------------------------------------------------------------
def error_summary(message: str | None) -> str | None:
    """The line of an error that says what went wrong: a traceback's last line."""
    if not message:
        return None
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return redact(lines[-1][:300]) if lines else None


def error_groups(session: Session, datarun_id: int) -> list[dict[str, Any]]:
    """Errored classifiers grouped by what went wrong (numbers in the message ignored), most
    frequent first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for cid, method, kind, message in session.execute(
        select(
            Classifier.id, Hyperpartition.method, Classifier.error_kind, Classifier.error_message
        )
        .join(Hyperpartition, Classifier.hyperpartition_id == Hyperpartition.id)
        .where(Classifier.datarun_id == datarun_id, Classifier.status == ERRORED)
        .order_by(Classifier.id)
    ):
        summary = error_summary(message) or "(no message)"
        kind_text = kind.value if kind is not None else "model"
        group = groups.setdefault(
            (kind_text, _NUMBER.sub("N", summary)),
            {"message": summary, "kind": kind_text, "count": 0, "methods": Counter(), "ids": []},
        )
        group["count"] += 1
        group["methods"][method] += 1
        if len(group["ids"]) < 10:
            group["ids"].append(cid)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["ids"][0]))
    return [
        {
            "message": g["message"],
            "kind": g["kind"],
            "count": g["count"],
            "methods": dict(g["methods"].most_common()),
            "classifier_ids": g["ids"],
        }
        for g in ordered
    ]


def ensemble(session: Session, datarun_id: int) -> dict[str, Any] | None:
    """The datarun's ensemble with each member's method and scores; None before it has one."""
    row = session.scalars(select(Ensemble).where(Ensemble.datarun_id == datarun_id)).first()
    if row is None:
        return None
    weights = row.weights
    labels = partition_labels(session, datarun_id)
    members = {
        cid: (method, labels[hp_id], cv, test)
        for cid, method, hp_id, cv, test in session.execute(
            select(
                Classifier.id,
                Hyperpartition.method,
                Classifier.hyperpartition_id,
                Classifier.cv_judgment_metric,
                Classifier.test_judgment_metric,
            )
            .join(Hyperpartition, Classifier.hyperpartition_id == Hyperpartition.id)
            .where(Classifier.id.in_(list(weights)))
        )
    }
    return {
        "datarun_id": datarun_id,
        "cv_judgment_metric": number(row.cv_judgment_metric),
        "test_judgment_metric": number(row.test_judgment_metric),
        "created_at": iso(row.created_at),
        "members": [
            {
                "classifier_id": cid,
                "weight": weight,
                "method": members[cid][0],
                "hyperpartition": members[cid][1],
                "cv_judgment_metric": number(members[cid][2]),
                "test_judgment_metric": number(members[cid][3]),
            }
            for cid, weight in weights.items()
            if cid in members
        ],
    }


def list_ensembles(
    session: Session, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    total = session.scalar(select(func.count(Ensemble.id))) or 0
    ids = session.scalars(
        select(Ensemble.datarun_id).order_by(Ensemble.datarun_id.desc()).limit(limit).offset(offset)
    ).all()
    return [ensemble(session, datarun_id) for datarun_id in ids], total


# -- datasets ---------------------------------------------------------------------------------
def dataset_record(dataset: Dataset, dataruns: int) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "description": dataset.description,
        "train_path": redact(dataset.train_path),
        "test_path": redact(dataset.test_path),
        "class_column": dataset.class_column,
        "n_examples": dataset.n_examples,
        "k_classes": dataset.k_classes,
        "d_features": dataset.d_features,
        "majority": number(dataset.majority),
        "size_kb": dataset.size_kb,
        "content_hash": dataset.content_hash,
        "class_labels": list(dataset.class_labels),
        "created_at": iso(dataset.created_at),
        "dataruns": dataruns,
    }


def list_datasets(
    session: Session, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    total = session.scalar(select(func.count(Dataset.id))) or 0
    rows = session.scalars(select(Dataset).order_by(Dataset.id.desc()).limit(limit).offset(offset))
    datasets = list(rows)
    counts = dict(
        session.execute(
            select(Datarun.dataset_id, func.count(Datarun.id))
            .where(Datarun.dataset_id.in_([d.id for d in datasets]))
            .group_by(Datarun.dataset_id)
        ).all()
    )
    return [dataset_record(d, counts.get(d.id, 0)) for d in datasets], total


def dataset_detail(session: Session, dataset_id: int) -> dict[str, Any]:
    dataset = found(session, Dataset, dataset_id)
    count = session.scalar(select(func.count(Datarun.id)).where(Datarun.dataset_id == dataset_id))
    record = dataset_record(dataset, count or 0)
    record["features"] = dataset.feature_schema
    return record
