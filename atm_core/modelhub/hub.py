"""The ModelHub: one database and the artifact store its models live in.

:class:`ModelHub` opens the connection and writes: datasets and dataruns, claims and their
transitions (the transactions themselves are in :mod:`atm_core.modelhub.claims`), ensembles;
and it loads stored models. Its queries are in :mod:`atm_core.modelhub.reads`.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DatabaseError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import IntegrityError as DuplicateRow
from sqlalchemy.orm import Session, sessionmaker

from atm_core.errors import NotFoundError
from atm_core.modelhub import claims
from atm_core.modelhub.claims import Claim, Outcome
from atm_core.modelhub.database import connection_error, create_hub_engine, open_schema
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
    utcnow,
)
from atm_core.modelhub.reads import Reads
from atm_core.retry import retry
from atm_core.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas as pd

    from atm_core.artifacts import ArtifactStore
    from atm_core.data.dataset import DatasetInfo
    from atm_core.search.hyperpartitions import HyperpartitionSpec

T = TypeVar("T")
DATABASE_ERRORS = (OperationalError, InterfaceError, DisconnectionError)


class ModelHub(Reads):
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
        try:
            open_schema(self.engine)
        except (*DATABASE_ERRORS, DatabaseError) as exc:  # also: not a database at all
            self.engine.dispose()
            raise connection_error(self.engine, exc) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.host = socket.gethostname()

    def __repr__(self) -> str:
        return f"ModelHub({self.engine.url.render_as_string(hide_password=True)!r})"

    @cached_property
    def store(self) -> ArtifactStore:
        """The artifact store, opened on first use (``atm status`` never needs it)."""
        from atm_core.artifacts import ArtifactStore

        return ArtifactStore(self.settings.artifact_root, retries=self.settings.artifact_retries)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # -- datasets and dataruns --------------------------------------------------------------
    def register_dataset(self, info: DatasetInfo, description: str | None = None) -> Dataset:
        """The dataset with this content, registering it if it is new (idempotent)."""
        try:
            with self.transaction() as session:
                return self._register_dataset(session, info, description)
        except DuplicateRow:
            # Another process registered the same content meanwhile (content_hash is unique).
            with self.transaction() as session:
                return self._register_dataset(session, info, description)

    @staticmethod
    def _register_dataset(session: Session, info: DatasetInfo, description: str | None) -> Dataset:
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
        options: dict[str, Any],
        groups: list[list[HyperpartitionSpec]],
        run_key: str | None = None,
        started_at: datetime | None = None,
    ) -> list[Datarun]:
        """Register the dataset (if new), then one datarun per group of partitions, atomically.

        ``options`` are the stored datarun options (see :mod:`atm_core.options`), validated.
        ``started_at``: when its walltime clock started (a front-end that runs the datarun at
        once: when it began reading the data); otherwise the first classifier starts it.
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
                _add_datarun(session, dataset.id, options, group, run_key, started_at)
                for group in groups
            ]
            session.flush()
            return dataruns

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

    def mark_files_lost(self, classifier_ids: list[int]) -> None:
        """Flag complete classifiers whose stored files are gone or altered (``atm verify``)."""

        def flag(session: Session) -> None:
            session.execute(
                update(Classifier)
                .where(Classifier.id.in_(classifier_ids), Classifier.files_lost_at.is_(None))
                .values(files_lost_at=utcnow())
                .execution_options(synchronize_session=False)
            )

        if classifier_ids:
            self._write(flag, "flagging lost files")

    def record_final_model(self, classifier_id: int, location: str, sha256: str) -> None:
        """Keep where a classifier's refit on every labelled row is stored."""

        def record(session: Session) -> None:
            session.execute(
                update(Classifier)
                .where(Classifier.id == classifier_id)
                .values(final_model_location=location, final_model_sha256=sha256)
                .execution_options(synchronize_session=False)
            )

        self._write(record, "recording a final model")

    def drop_ensemble(self, datarun_id: int) -> None:
        """Forget a datarun's ensemble (one of its members was lost) so it can be chosen again."""
        self._write(
            lambda session: session.execute(
                delete(Ensemble).where(Ensemble.datarun_id == datarun_id)
            ),
            "dropping an ensemble",
        )

    # -- stored models ----------------------------------------------------------------------
    def model_bytes(self, classifier_id: int, final: bool = True) -> bytes:
        """The stored pickle of a complete classifier, checked against its recorded sha256:
        its refit on every labelled row when there is one and ``final``, else the model its
        scores were measured on."""
        classifier = self.get_classifier(classifier_id)
        if classifier.status != ClassifierStatus.COMPLETE or not classifier.model_location:
            raise NotFoundError(
                f"classifier {classifier_id} is {classifier.status.value} and has no stored model"
            )
        if classifier.files_lost_at is not None:
            raise NotFoundError(
                f"classifier {classifier_id}'s stored files were found lost on "
                f"{classifier.files_lost_at:%Y-%m-%d %H:%M} UTC (atm verify)"
            )
        if final and classifier.final_model_location:
            return self.store.read_model(
                classifier.final_model_location, classifier.final_model_sha256
            )
        return self.store.read_model(classifier.model_location, classifier.model_sha256)

    def load_model(self, classifier_id: int, final: bool = True) -> Any:
        """The fitted pipeline of a complete classifier (sha256-verified): ``predict`` away.

        By default the model refitted on every labelled row when the search ended (when its
        datarun refits); ``final=False``: the model fitted on the training part, whose test
        score the ModelHub records."""
        return pickle.loads(self.model_bytes(classifier_id, final))

    def load_metrics(self, classifier_id: int) -> pd.DataFrame:
        classifier = self.get_classifier(classifier_id)
        if not classifier.metrics_location:
            raise NotFoundError(f"classifier {classifier_id} has no stored metrics")
        return self.store.load_frame(classifier.metrics_location)

    def load_predictions(self, classifier: Classifier) -> pd.DataFrame:
        if not classifier.predictions_location:
            raise NotFoundError(f"classifier {classifier.id} has no stored predictions")
        return self.store.load_frame(classifier.predictions_location)

    def load_ensemble(self, datarun_id: int, final: bool = True) -> Any:
        """The datarun's ensemble as one model (its members' verified pickles, weighted; see
        :meth:`load_model` for ``final``): ``predict`` and ``predict_proba`` away."""
        from atm_core.ensemble import EnsembleModel

        ensemble = self.ensemble(datarun_id)
        dataset = self.get_dataset(self.get_datarun(datarun_id).dataset_id)
        members = [(self.load_model(i, final), weight) for i, weight in ensemble.weights.items()]
        return EnsembleModel(members, list(dataset.class_labels))

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

    def promote(self, datarun_id: int, affordable: Any = None) -> Claim | None:
        """Reserve a configuration due its next rung (see :mod:`atm_core.modelhub.promotion`)."""
        from atm_core.modelhub.promotion import promote

        return self._write(
            lambda session: promote(
                session, datarun_id, self.host, self.settings.lease_seconds, affordable
            ),
            "promoting a classifier",
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
        self,
        claim: Claim,
        message: str,
        kind: ErrorKind = ErrorKind.MODEL,
        seconds: float | None = None,
    ) -> bool:
        return self._write(
            lambda session: claims.fail(
                session, claim, message, self.settings.max_hyperpartition_errors, kind, seconds
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

    def finish_if_done(self, datarun_id: int, reserve_seconds: float = 0.0) -> bool:
        return self._write(
            lambda session: claims.finish_if_done(session, datarun_id, reserve_seconds),
            "completing a datarun",
        )


def _add_datarun(
    session: Session,
    dataset_id: int,
    options: dict[str, Any],
    partitions: list[HyperpartitionSpec],
    run_key: str | None = None,
    started_at: datetime | None = None,
) -> Datarun:
    datarun = Datarun(
        dataset_id=dataset_id,
        **{
            **options,
            "budget_type": BudgetType(options["budget_type"]),
            "score_target": ScoreTarget(options["score_target"]),
        },
        run_key=run_key,
        start_time=started_at,
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
