"""The ModelHub API: register data, create dataruns, query results, load models.

Claims and status transitions live in :mod:`atm_core.modelhub.claims`; this class opens the
transactions around them so callers never handle sessions.
"""

from __future__ import annotations

import math
import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import func, select, text
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import IntegrityError as DuplicateRow
from sqlalchemy.orm import Session, sessionmaker

from atm_core.artifacts import ArtifactStore
from atm_core.data.dataset import DatasetInfo, FeatureSchema
from atm_core.errors import NotFoundError
from atm_core.modelhub import claims
from atm_core.modelhub.claims import Claim, Outcome
from atm_core.modelhub.database import create_hub_engine, ensure_schema
from atm_core.modelhub.models import (
    BudgetType,
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    Dataset,
    Ensemble,
    ErrorKind,
    Hyperpartition,
    HyperpartitionStatus,
    ScoreTarget,
)
from atm_core.retry import retry
from atm_core.search import DEFAULT_SELECTOR, DEFAULT_TUNER
from atm_core.search.catalogue import ParamSpec
from atm_core.search.hyperpartitions import HyperpartitionSpec
from atm_core.search.proposal import Partition, SearchConfig, Trial
from atm_core.settings import Settings, load_settings

T = TypeVar("T")
DATABASE_ERRORS = (OperationalError, InterfaceError, DisconnectionError)


@dataclass(frozen=True)
class DatarunOptions:
    """Everything a datarun is configured with (the flags of ``atm enter_data``)."""

    selector: str = DEFAULT_SELECTOR
    tuner: str = DEFAULT_TUNER
    k_window: int = 3
    r_minimum: int = 2
    gridding: int = 0
    priority: int = 1
    budget_type: str = "classifier"
    budget: int = 100
    deadline: Any = None  # naive UTC datetime
    metric: str = "f1"
    score_target: str = "cv"
    seed: int = 0
    test_size: float = 0.3
    time_limit: float | None = None
    warm_start: bool = True
    cv_folds: int | None = None
    description: str | None = None


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


def hyperpartition_spec(partition: Hyperpartition) -> HyperpartitionSpec:
    return HyperpartitionSpec(
        method=partition.method,
        estimator_class=partition.estimator_class,
        categoricals=tuple((name, value) for name, value in partition.categoricals),
        constants=tuple((name, value) for name, value in partition.constants),
        tunables=tuple(ParamSpec.from_json(spec) for spec in partition.tunables),
    )


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


def _found(session: Session, model: type, key: int) -> Any:
    row = session.get(model, key)
    if row is None:
        raise NotFoundError(f"no {model.__tablename__[:-1]} with id {key} in the ModelHub")
    return row


def _best(session: Session, datarun: Datarun) -> Classifier | None:
    return session.scalars(
        select(Classifier)
        .where(Classifier.datarun_id == datarun.id, Classifier.status == ClassifierStatus.COMPLETE)
        .order_by(judgment_expression(datarun.score_target).desc(), Classifier.id)
        .limit(1)
    ).first()


class ModelHub:
    """One ModelHub database (and the artifact store its models live in)."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        artifact_root: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            settings = load_settings(database_url=database_url, artifact_root=artifact_root)
        self.settings = settings
        self.engine = create_hub_engine(settings.database_url)
        ensure_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.store = ArtifactStore(settings.artifact_root, retries=settings.artifact_retries)
        self.host = socket.gethostname()

    def __repr__(self) -> str:
        return f"ModelHub({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- datasets and dataruns --------------------------------------------------------------
    def find_dataset(self, content_hash: str) -> Dataset | None:
        with self.transaction() as session:
            return session.scalars(
                select(Dataset).where(Dataset.content_hash == content_hash).order_by(Dataset.id)
            ).first()

    def register_dataset(self, info: DatasetInfo, description: str | None = None) -> Dataset:
        """The dataset with this content, registering it if it is new (idempotent)."""
        try:
            with self.transaction() as session:
                return self._register_dataset(session, info, description)
        except DuplicateRow:
            # Another process registered the same content meanwhile (content_hash is unique).
            with self.transaction() as session:
                return self._register_dataset(session, info, description)

    def _register_dataset(
        self, session: Session, info: DatasetInfo, description: str | None
    ) -> Dataset:
        existing = session.scalars(
            select(Dataset).where(Dataset.content_hash == info.content_hash).order_by(Dataset.id)
        ).first()
        if existing is not None:
            return existing
        dataset = Dataset(
            name=info.name,
            description=description,
            train_path=info.train_path,
            test_path=info.test_path,
            class_column=info.class_column,
            n_examples=info.n_examples,
            k_classes=info.k_classes,
            d_features=info.d_features,
            majority=info.majority,
            size_kb=info.size_kb,
            content_hash=info.content_hash,
            feature_schema=info.schema.to_json(),
            class_labels=list(info.classes),
        )
        session.add(dataset)
        session.flush()
        return dataset

    def create_dataruns(
        self,
        info: DatasetInfo,
        options: DatarunOptions,
        groups: list[list[HyperpartitionSpec]],
        run_key: str | None = None,
    ) -> list[Datarun]:
        """Register the dataset (if new), then one datarun per group of partitions, atomically.

        With a ``run_key``, dataruns already created under that key are returned instead, so a
        retried creator (a Prefect flow run) continues its datarun rather than starting another.
        """
        if not groups or not all(groups):
            raise ValueError("every datarun needs at least one hyperpartition")
        self.register_dataset(info)  # first, on its own: it may race with other registrations
        with self.transaction() as session:
            if run_key is not None:
                existing = session.scalars(
                    select(Datarun).where(Datarun.run_key == run_key).order_by(Datarun.id)
                ).all()
                if existing:
                    return list(existing)
            dataset = self._register_dataset(session, info, None)
            dataruns = [
                self._add_datarun(session, dataset.id, options, group, run_key) for group in groups
            ]
            session.flush()
            return dataruns

    def create_datarun(
        self, info: DatasetInfo, options: DatarunOptions, hyperpartitions: list[HyperpartitionSpec]
    ) -> Datarun:
        return self.create_dataruns(info, options, [hyperpartitions])[0]

    @staticmethod
    def _add_datarun(
        session: Session,
        dataset_id: int,
        options: DatarunOptions,
        partitions: list[HyperpartitionSpec],
        run_key: str | None = None,
    ) -> Datarun:
        datarun = Datarun(
            dataset_id=dataset_id,
            description=options.description,
            selector=options.selector,
            k_window=options.k_window,
            tuner=options.tuner,
            r_minimum=options.r_minimum,
            gridding=options.gridding,
            priority=options.priority,
            budget_type=BudgetType(options.budget_type),
            budget=options.budget,
            deadline=options.deadline,
            metric=options.metric,
            score_target=ScoreTarget(options.score_target),
            seed=options.seed,
            test_size=options.test_size,
            time_limit=options.time_limit,
            warm_start=options.warm_start,
            cv_folds=options.cv_folds,
            run_key=run_key,
            status=DatarunStatus.PENDING,
        )
        session.add(datarun)
        session.flush()
        for spec in partitions:
            session.add(
                Hyperpartition(
                    datarun_id=datarun.id,
                    method=spec.method,
                    estimator_class=spec.estimator_class,
                    categoricals=[list(pair) for pair in spec.categoricals],
                    constants=[list(pair) for pair in spec.constants],
                    tunables=[param.to_json() for param in spec.tunables],
                    status=HyperpartitionStatus.INCOMPLETE,
                )
            )
        return datarun

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
            return _found(session, model, key)

    def dataruns(self) -> list[Datarun]:
        with self.transaction() as session:
            return list(session.scalars(select(Datarun).order_by(Datarun.id)))

    def datasets(self) -> list[Dataset]:
        with self.transaction() as session:
            return list(session.scalars(select(Dataset).order_by(Dataset.id)))

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

    # -- results ----------------------------------------------------------------------------
    def leaderboard(self, datarun_id: int, limit: int | None = None) -> pd.DataFrame:
        """Complete classifiers ranked by the datarun's judgment metric, best first."""
        datarun = self.get_datarun(datarun_id)
        methods = {
            hp.id: hyperpartition_spec(hp).label() for hp in self.hyperpartitions(datarun_id)
        }
        rows = []
        for classifier in self.classifiers(datarun_id, status=ClassifierStatus.COMPLETE):
            rows.append(
                {
                    "classifier_id": classifier.id,
                    "method": methods[classifier.hyperpartition_id].split("(")[0],
                    "hyperpartition": methods[classifier.hyperpartition_id],
                    "judgment_metric": judgment(classifier, datarun.score_target),
                    "cv_judgment_metric": classifier.cv_judgment_metric,
                    "cv_judgment_metric_stdev": classifier.cv_judgment_metric_stdev,
                    "test_judgment_metric": classifier.test_judgment_metric,
                    "hyperparameters": classifier.hyperparameters_values,
                    "model_location": classifier.model_location,
                }
            )
        columns = [
            "classifier_id",
            "method",
            "hyperpartition",
            "judgment_metric",
            "cv_judgment_metric",
            "cv_judgment_metric_stdev",
            "test_judgment_metric",
            "hyperparameters",
            "model_location",
        ]
        frame = pd.DataFrame(rows, columns=columns)
        frame = frame.sort_values(["judgment_metric", "classifier_id"], ascending=[False, True])
        frame.insert(0, "rank", range(1, len(frame) + 1))
        frame = frame.reset_index(drop=True)
        return frame if limit is None else frame.head(limit)

    def best_classifier(self, datarun_id: int) -> Classifier | None:
        """The complete classifier with the highest judgment metric (None before the first)."""
        with self.transaction() as session:
            return _best(session, _found(session, Datarun, datarun_id))

    def progress(self, datarun_id: int) -> DatarunProgress:
        """The datarun, its best classifier and its classifier count, read in one transaction
        (a progress bar's update, after every classifier)."""
        with self.transaction() as session:
            datarun = _found(session, Datarun, datarun_id)
            count = session.scalar(
                select(func.count(Classifier.id)).where(Classifier.datarun_id == datarun_id)
            )
            return DatarunProgress(datarun, _best(session, datarun), count or 0)

    def standing(self, datarun_id: int, score: float) -> Standing:
        """The datarun's best classifier and the number ranking ahead of ``score`` (a judgment
        metric), read in one transaction before a finished classifier is stored."""
        with self.transaction() as session:
            datarun = _found(session, Datarun, datarun_id)
            ahead = session.scalar(
                select(func.count(Classifier.id)).where(
                    Classifier.datarun_id == datarun_id,
                    Classifier.status == ClassifierStatus.COMPLETE,
                    judgment_expression(datarun.score_target) >= score,
                )
            )
            return Standing(_best(session, datarun), ahead or 0)

    def model_bytes(self, classifier_id: int) -> bytes:
        """The stored pickle of a complete classifier, checked against its recorded sha256."""
        classifier = self.get_classifier(classifier_id)
        if classifier.status != ClassifierStatus.COMPLETE or not classifier.model_location:
            raise NotFoundError(
                f"classifier {classifier_id} is {classifier.status.value} and has no stored model"
            )
        return self.store.read_model(classifier.model_location, classifier.model_sha256)

    def load_model(self, classifier_id: int) -> Any:
        """The fitted pipeline of a complete classifier (sha256-verified): ``predict`` away."""
        return pickle.loads(self.model_bytes(classifier_id))

    def load_metrics(self, classifier_id: int) -> pd.DataFrame:
        classifier = self.get_classifier(classifier_id)
        if not classifier.metrics_location:
            raise NotFoundError(f"classifier {classifier_id} has no stored metrics")
        return self.store.load_frame(classifier.metrics_location)

    # -- ensembles --------------------------------------------------------------------------
    def ensemble_candidates(self, datarun_id: int, limit: int) -> list[Classifier]:
        """The datarun's best ``limit`` complete classifiers with stored predictions, best first
        (ranked as the leaderboard ranks them)."""
        with self.transaction() as session:
            datarun = _found(session, Datarun, datarun_id)
            return list(
                session.scalars(
                    select(Classifier)
                    .where(
                        Classifier.datarun_id == datarun_id,
                        Classifier.status == ClassifierStatus.COMPLETE,
                        Classifier.predictions_location.is_not(None),
                    )
                    .order_by(judgment_expression(datarun.score_target).desc(), Classifier.id)
                    .limit(limit)
                )
            )

    def load_predictions(self, classifier: Classifier) -> pd.DataFrame:
        if not classifier.predictions_location:
            raise NotFoundError(f"classifier {classifier.id} has no stored predictions")
        return self.store.load_frame(classifier.predictions_location)

    def record_ensemble(
        self, datarun_id: int, weights: dict[int, int], cv_score: float, test_score: float
    ) -> Ensemble:
        """Keep a datarun's ensemble; the first one recorded stays (one per datarun)."""

        def insert(session: Session) -> Ensemble:
            ensemble = Ensemble(
                datarun_id=datarun_id,
                members=[[classifier_id, weight] for classifier_id, weight in weights.items()],
                cv_judgment_metric=cv_score,
                test_judgment_metric=test_score,
            )
            session.add(ensemble)
            session.flush()
            return ensemble

        try:
            return self._write(insert, "recording an ensemble")
        except DuplicateRow:
            ensemble = self.get_ensemble(datarun_id)
            assert ensemble is not None  # the row another finalizer inserted first
            return ensemble

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

    def load_ensemble(self, datarun_id: int) -> Any:
        """The datarun's ensemble as one model (its members' verified pickles, weighted):
        ``predict`` and ``predict_proba`` away."""
        from atm_core.ensemble import EnsembleModel

        ensemble = self.ensemble(datarun_id)
        dataset = self.get_dataset(self.get_datarun(datarun_id).dataset_id)
        members = [(self.load_model(i), weight) for i, weight in ensemble.weights.items()]
        return EnsembleModel(members, list(dataset.class_labels))

    # -- search history ---------------------------------------------------------------------
    def search_config(self, datarun: Datarun) -> SearchConfig:
        return SearchConfig(
            selector=datarun.selector,
            tuner=datarun.tuner,
            k_window=datarun.k_window,
            r_minimum=datarun.r_minimum,
            gridding=datarun.gridding,
            warm_start=datarun.warm_start,
        )

    def search_history(self, datarun_id: int) -> list[Partition]:
        """Open hyperpartitions with every configuration taken in them and its score."""
        with self.transaction() as session:
            datarun = session.get(Datarun, datarun_id)
            partitions = {
                hp.id: Partition(hp.id, hyperpartition_spec(hp))
                for hp in session.scalars(
                    select(Hyperpartition)
                    .where(
                        Hyperpartition.datarun_id == datarun_id,
                        Hyperpartition.status == HyperpartitionStatus.INCOMPLETE,
                    )
                    .order_by(Hyperpartition.id)
                )
            }
            for classifier in session.scalars(
                select(Classifier)
                .where(Classifier.datarun_id == datarun_id)
                .order_by(Classifier.id)
            ):
                partition = partitions.get(classifier.hyperpartition_id)
                if partition is not None:
                    score = judgment(classifier, datarun.score_target)
                    partition.trials.append(
                        Trial(
                            classifier.hyperparameters_values,
                            score if score is not None and math.isfinite(score) else None,
                        )
                    )
        return list(partitions.values())

    def schema_of(self, dataset: Dataset) -> FeatureSchema:
        return FeatureSchema.from_json(dataset.feature_schema)

    # -- claims (see claims.py) -------------------------------------------------------------
    def _write(self, operation: Callable[[Session], T], what: str) -> T:
        """Run a claim operation in its own transaction, retried while the database is away.

        Every operation is safe to repeat: token-guarded updates recognise their own earlier
        success (a commit whose acknowledgement was lost), and pool pre-ping replaces the
        connections a restarted server dropped.
        """

        def attempt() -> T:
            with self.transaction() as session:
                return operation(session)

        return retry(attempt, retry_on=DATABASE_ERRORS, attempts=4, first_delay=0.5, what=what)

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def has_budget(self, datarun_id: int) -> bool:
        with self.transaction() as session:
            datarun = session.get(Datarun, datarun_id)
            return (
                datarun is not None
                and datarun.status != DatarunStatus.COMPLETE
                and claims.has_budget(session, datarun)
            )

    def reserve(
        self, datarun_id: int, hyperpartition_id: int, values: dict[str, Any]
    ) -> Claim | None:
        return self._write(
            lambda session: claims.reserve(
                session,
                datarun_id,
                hyperpartition_id,
                values,
                self.host,
                self.settings.lease_seconds,
            ),
            "reserving a classifier",
        )

    def reclaim_expired(self, datarun_id: int) -> Claim | None:
        return self._write(
            lambda session: claims.reclaim_expired(
                session,
                datarun_id,
                self.host,
                self.settings.lease_seconds,
                self.settings.max_attempts,
                self.settings.max_hyperpartition_errors,
            ),
            "reclaiming expired classifiers",
        )

    def renew_lease(self, claim: Claim) -> bool:
        with self.transaction() as session:
            return claims.renew_lease(session, claim, self.settings.lease_seconds)

    def complete_classifier(self, claim: Claim, outcome: Outcome) -> bool:
        return self._write(
            lambda session: claims.complete(session, claim, outcome), "recording a classifier"
        )

    def fail_classifier(
        self, claim: Claim, message: str, kind: ErrorKind = ErrorKind.MODEL
    ) -> bool:
        return self._write(
            lambda session: claims.fail(
                session, claim, message, self.settings.max_hyperpartition_errors, kind
            ),
            "recording an error",
        )

    def release(self, claim: Claim) -> bool:
        return self._write(lambda session: claims.release(session, claim), "releasing a claim")

    def mark_exhausted(self, hyperpartition_ids: list[int]) -> None:
        self._write(
            lambda session: claims.mark_exhausted(session, hyperpartition_ids),
            "marking exhausted hyperpartitions",
        )

    def running_count(self, datarun_id: int) -> int:
        with self.transaction() as session:
            return claims.running_count(session, datarun_id)

    def finish_if_done(self, datarun_id: int) -> bool:
        return self._write(
            lambda session: claims.finish_if_done(session, datarun_id), "completing a datarun"
        )
