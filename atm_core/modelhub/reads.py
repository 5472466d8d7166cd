"""Reading the ModelHub: rows by id, lists, rankings, progress and what one claim needs.

Nothing here writes. Each method is one transaction; rows come back detached (readable after
the transaction ends). Light on purpose: ``atm status`` and ``atm leaderboard`` read through
this module without importing pandas, scikit-learn or the search stack.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from atm_core.errors import NotFoundError
from atm_core.modelhub.claims import Claim, running_count
from atm_core.modelhub.models import (
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    Dataset,
    Ensemble,
    Hyperpartition,
    ScoreTarget,
)

if TYPE_CHECKING:
    import pandas as pd

LEADERBOARD_COLUMNS = (
    "rank",
    "classifier_id",
    "method",
    "hyperpartition",
    "judgment_metric",
    "cv_judgment_metric",
    "cv_judgment_metric_stdev",
    "test_judgment_metric",
    "hyperparameters",
    "model_location",
    "rung",
)


def judgment(classifier: Classifier, score_target: str) -> float | None:
    """The score that ranks a classifier under the datarun's score target."""
    if classifier.status != ClassifierStatus.COMPLETE:
        return None
    if score_target == ScoreTarget.TEST:
        return classifier.test_judgment_metric
    if score_target == ScoreTarget.MU_SIGMA:
        return classifier.cv_judgment_metric - 2 * (classifier.cv_judgment_metric_stdev or 0.0)
    return classifier.cv_judgment_metric


def judgment_expression(score_target: str) -> Any:
    """:func:`judgment` as a SQL expression, for ordering in the database."""
    if score_target == ScoreTarget.TEST:
        return Classifier.test_judgment_metric
    if score_target == ScoreTarget.MU_SIGMA:
        return Classifier.cv_judgment_metric - 2 * func.coalesce(
            Classifier.cv_judgment_metric_stdev, 0.0
        )
    return Classifier.cv_judgment_metric


def partition_label(partition: Hyperpartition) -> str:
    """``method(name=value, ...)``: a hyperpartition by its categorical choices."""
    choices = ", ".join(f"{name}={value}" for name, value in partition.categoricals)
    return f"{partition.method}({choices})" if choices else partition.method


@dataclass(frozen=True)
class DatarunProgress:
    datarun: Datarun
    best: Classifier | None
    classifiers: int  # rows of any status: the spent classifier budget


@dataclass(frozen=True)
class Standing:
    """Where a new score would stand in a datarun: its best classifier so far, and how many
    complete classifiers rank ahead of the score (at least as high: ties go to the older)."""

    best: Classifier | None
    ahead: int


@dataclass(frozen=True)
class DatarunStatusRow:
    """One line of ``atm status``."""

    datarun: Datarun
    dataset_name: str
    counts: dict[str, int]
    best: Classifier | None


@dataclass(frozen=True)
class ClaimContext:
    """Everything training one claimed classifier needs, read in one transaction."""

    claim: Claim
    classifier: Classifier
    partition: Hyperpartition
    datarun: Datarun
    dataset: Dataset

    @property
    def values(self) -> dict[str, Any]:
        return self.classifier.hyperparameters_values


def found(session: Session, model: type, key: int) -> Any:
    """The row of ``model`` with id ``key``; NotFoundError (a user error) when there is none."""
    row = session.get(model, key)
    if row is None:
        raise NotFoundError(f"no {model.__tablename__[:-1]} with id {key} in the ModelHub")
    return row


def usable() -> tuple[Any, ...]:
    """Conditions of a classifier whose stored model can be used: complete, files not lost."""
    return (Classifier.status == ClassifierStatus.COMPLETE, Classifier.files_lost_at.is_(None))


def ranking(score_target: str) -> tuple[Any, ...]:
    """Best first: the highest rung reached (a full evaluation beats a subsample's), then the
    judgment metric, then the older classifier."""
    return (
        Classifier.rung.desc(),
        judgment_expression(score_target).desc(),
        Classifier.id,
    )


def best_of(session: Session, datarun: Datarun) -> Classifier | None:
    return session.scalars(
        select(Classifier)
        .where(Classifier.datarun_id == datarun.id, *usable())
        .order_by(*ranking(datarun.score_target))
        .limit(1)
    ).first()


class Reads:
    """The ModelHub's queries; :class:`~atm_core.modelhub.hub.ModelHub` is one of these."""

    transaction: Callable[[], AbstractContextManager[Session]]

    # -- by id ------------------------------------------------------------------------------
    def get_dataset(self, dataset_id: int) -> Dataset:
        return self._get(Dataset, dataset_id)

    def get_datarun(self, datarun_id: int) -> Datarun:
        return self._get(Datarun, datarun_id)

    def get_classifier(self, classifier_id: int) -> Classifier:
        return self._get(Classifier, classifier_id)

    def get_hyperpartition(self, hyperpartition_id: int) -> Hyperpartition:
        return self._get(Hyperpartition, hyperpartition_id)

    def _get(self, model: type, key: int) -> Any:
        with self.transaction() as session:
            return found(session, model, key)

    def claim_context(self, claim: Claim) -> ClaimContext:
        """The claimed classifier with its hyperpartition, datarun and dataset."""
        with self.transaction() as session:
            classifier = found(session, Classifier, claim.classifier_id)
            partition = found(session, Hyperpartition, classifier.hyperpartition_id)
            datarun = found(session, Datarun, classifier.datarun_id)
            dataset = found(session, Dataset, datarun.dataset_id)
            return ClaimContext(claim, classifier, partition, datarun, dataset)

    # -- lists ------------------------------------------------------------------------------
    def datasets(self) -> list[Dataset]:
        with self.transaction() as session:
            return list(session.scalars(select(Dataset).order_by(Dataset.id)))

    def dataruns(self) -> list[Datarun]:
        with self.transaction() as session:
            return list(session.scalars(select(Datarun).order_by(Datarun.id)))

    def dataruns_with_key(self, run_key: str) -> list[Datarun]:
        """Dataruns created under ``run_key`` (e.g. by one Prefect flow run)."""
        with self.transaction() as session:
            return list(
                session.scalars(
                    select(Datarun).where(Datarun.run_key == run_key).order_by(Datarun.id)
                )
            )

    def dataruns_by_priority(self, datarun_ids: list[int] | None = None) -> list[Datarun]:
        """Unfinished dataruns, highest priority first (oldest first among equals)."""
        query = select(Datarun).where(Datarun.status != DatarunStatus.COMPLETE)
        if datarun_ids:
            query = query.where(Datarun.id.in_(datarun_ids))
        with self.transaction() as session:
            return list(session.scalars(query.order_by(Datarun.priority.desc(), Datarun.id)))

    def missing_dataruns(self, datarun_ids: list[int]) -> list[int]:
        """Those of ``datarun_ids`` that the ModelHub does not hold."""
        with self.transaction() as session:
            known = set(session.scalars(select(Datarun.id).where(Datarun.id.in_(datarun_ids))))
        return [i for i in datarun_ids if i not in known]

    def hyperpartitions(self, datarun_id: int) -> list[Hyperpartition]:
        with self.transaction() as session:
            return list(
                session.scalars(
                    select(Hyperpartition)
                    .where(Hyperpartition.datarun_id == datarun_id)
                    .order_by(Hyperpartition.id)
                )
            )

    def classifiers(self, datarun_id: int, status: str | None = None) -> list[Classifier]:
        query = select(Classifier).where(Classifier.datarun_id == datarun_id)
        if status is not None:
            query = query.where(Classifier.status == ClassifierStatus(status))
        with self.transaction() as session:
            return list(session.scalars(query.order_by(Classifier.id)))

    def status_rows(self) -> list[DatarunStatusRow]:
        """Every datarun with its dataset's name, classifier counts and best classifier: the
        whole of ``atm status`` in one transaction."""
        with self.transaction() as session:
            rows = session.execute(
                select(Datarun, Dataset.name)
                .join(Dataset, Dataset.id == Datarun.dataset_id)
                .order_by(Datarun.id)
            ).all()
            counts: dict[int, dict[str, int]] = {}
            for datarun_id, status, count in session.execute(
                select(
                    Classifier.datarun_id, Classifier.status, func.count(Classifier.id)
                ).group_by(Classifier.datarun_id, Classifier.status)
            ):
                counts.setdefault(datarun_id, {})[ClassifierStatus(status).value] = count
            for datarun_id, count in session.execute(
                select(Classifier.datarun_id, func.count(Classifier.id))
                .where(Classifier.files_lost_at.is_not(None))
                .group_by(Classifier.datarun_id)
            ):
                counts[datarun_id]["files lost"] = count  # (also counted as complete)
            return [
                DatarunStatusRow(
                    datarun, name, counts.get(datarun.id, {}), best_of(session, datarun)
                )
                for datarun, name in rows
            ]

    # -- rankings ---------------------------------------------------------------------------
    def best_classifier(self, datarun_id: int) -> Classifier | None:
        """The complete classifier with the highest judgment metric (None before the first)."""
        with self.transaction() as session:
            return best_of(session, found(session, Datarun, datarun_id))

    def leaderboard_rows(self, datarun_id: int, limit: int | None = None) -> list[dict[str, Any]]:
        """Complete classifiers ranked by the datarun's judgment metric, best first (ties go to
        the older), as records of :data:`LEADERBOARD_COLUMNS`; those whose files were lost
        (:meth:`lost_classifiers`) are left out."""
        with self.transaction() as session:
            datarun = found(session, Datarun, datarun_id)
            labels = {
                partition.id: partition_label(partition)
                for partition in session.scalars(
                    select(Hyperpartition).where(Hyperpartition.datarun_id == datarun_id)
                )
            }
            query = (
                select(Classifier)
                .where(Classifier.datarun_id == datarun_id, *usable())
                .order_by(*ranking(datarun.score_target))
            )
            if limit is not None:
                query = query.limit(limit)
            return [
                {
                    "rank": rank,
                    "classifier_id": classifier.id,
                    "method": classifier.method,
                    "hyperpartition": labels[classifier.hyperpartition_id],
                    "judgment_metric": judgment(classifier, datarun.score_target),
                    "cv_judgment_metric": classifier.cv_judgment_metric,
                    "cv_judgment_metric_stdev": classifier.cv_judgment_metric_stdev,
                    "test_judgment_metric": classifier.test_judgment_metric,
                    "hyperparameters": classifier.hyperparameters_values,
                    "model_location": classifier.model_location,
                    "rung": classifier.rung,
                }
                for rank, classifier in enumerate(session.scalars(query), start=1)
            ]

    def lost_classifiers(self, datarun_id: int) -> list[Classifier]:
        """Complete classifiers whose stored files ``atm verify`` found lost or altered."""
        with self.transaction() as session:
            return list(
                session.scalars(
                    select(Classifier)
                    .where(
                        Classifier.datarun_id == datarun_id,
                        Classifier.files_lost_at.is_not(None),
                    )
                    .order_by(Classifier.id)
                )
            )

    def leaderboard(self, datarun_id: int, limit: int | None = None) -> pd.DataFrame:
        """:meth:`leaderboard_rows` as a DataFrame (for Python users and parquet)."""
        import pandas as pd

        rows = self.leaderboard_rows(datarun_id, limit)
        return pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))

    def progress(self, datarun_id: int) -> DatarunProgress:
        """The datarun, its best classifier and its classifier count, read in one transaction
        (a progress bar's update, after every classifier)."""
        with self.transaction() as session:
            datarun = found(session, Datarun, datarun_id)
            count = session.scalar(
                select(func.count(Classifier.id)).where(Classifier.datarun_id == datarun_id)
            )
            return DatarunProgress(datarun, best_of(session, datarun), count or 0)

    def standing(self, datarun: Datarun, score: float) -> Standing:
        """The datarun's best classifier and the number ranking ahead of ``score`` (a judgment
        metric), read in one transaction before a finished classifier is stored."""
        with self.transaction() as session:
            ahead = session.scalar(
                select(func.count(Classifier.id)).where(
                    Classifier.datarun_id == datarun.id,
                    *usable(),
                    Classifier.rung == datarun.top_rung,
                    judgment_expression(datarun.score_target) >= score,
                )
            )
            return Standing(best_of(session, datarun), ahead or 0)

    def running_count(self, datarun_id: int) -> int:
        with self.transaction() as session:
            return running_count(session, datarun_id)

    # -- ensembles --------------------------------------------------------------------------
    def get_ensemble(self, datarun_id: int) -> Ensemble | None:
        with self.transaction() as session:
            return session.scalars(
                select(Ensemble).where(Ensemble.datarun_id == datarun_id)
            ).first()

    def ensemble(self, datarun_id: int) -> Ensemble:
        """The datarun's ensemble; NotFoundError before it has one."""
        ensemble = self.get_ensemble(datarun_id)
        if ensemble is None:
            self.get_datarun(datarun_id)  # an unknown datarun is its own error
            raise NotFoundError(
                f"datarun {datarun_id} has no ensemble: it is chosen when the datarun completes "
                "(`atm ensemble` chooses it for a complete one)"
            )
        return ensemble

    def ensemble_members(self, ensemble: Ensemble) -> list[tuple[Classifier, int]]:
        """The ensemble's member classifiers with their weights, best first."""
        weights = ensemble.weights
        with self.transaction() as session:
            rows = {
                row.id: row
                for row in session.scalars(select(Classifier).where(Classifier.id.in_(weights)))
            }
        return [(rows[classifier_id], weight) for classifier_id, weight in weights.items()]

    def ensemble_candidates(self, datarun_id: int, limit: int) -> list[Classifier]:
        """The datarun's best ``limit`` complete classifiers with stored predictions, best first
        (ranked as the leaderboard ranks them)."""
        with self.transaction() as session:
            datarun = found(session, Datarun, datarun_id)
            return list(
                session.scalars(
                    select(Classifier)
                    .where(
                        Classifier.datarun_id == datarun_id,
                        *usable(),
                        Classifier.rung == datarun.top_rung,
                        Classifier.predictions_location.is_not(None),
                    )
                    .order_by(judgment_expression(datarun.score_target).desc(), Classifier.id)
                    .limit(limit)
                )
            )
