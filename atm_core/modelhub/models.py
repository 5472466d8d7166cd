"""The ModelHub schema: datasets, dataruns, hyperpartitions, classifiers and ensembles.

Field names follow the ATM documentation's "Guide to the ModelHub database". Hyperparameter
specs and values are JSON (the original stored base64 pickles that broke when BTB changed).
Times are naive UTC. The schema only changes through the alembic migrations next to this file.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# MySQL's TEXT stops at 64 KB; tracebacks and wide JSON specs can be longer.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# MySQL's DATETIME drops fractions of a second unless asked; leases need them.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> datetime:
    """Naive UTC: every dialect stores it the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


class DatarunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"


class ClassifierStatus(enum.StrEnum):
    RUNNING = "running"
    ERRORED = "errored"
    COMPLETE = "complete"


class HyperpartitionStatus(enum.StrEnum):
    INCOMPLETE = "incomplete"
    GRIDDING_DONE = "gridding_done"
    ERRORED = "errored"


class BudgetType(enum.StrEnum):
    CLASSIFIER = "classifier"
    WALLTIME = "walltime"


class ErrorKind(enum.StrEnum):
    """Why a classifier errored; only a model's own failures count against its partition."""

    MODEL = "model"  # the fit, scoring or pickling raised
    WORKER_LOST = "worker_lost"  # its worker died too often (the configuration may kill it)
    INFRASTRUCTURE = "infrastructure"  # database or object store down after retries


class ScoreTarget(enum.StrEnum):
    CV = "cv"
    TEST = "test"
    MU_SIGMA = "mu_sigma"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(1000))
    train_path: Mapped[str] = mapped_column(String(1000))
    test_path: Mapped[str | None] = mapped_column(String(1000))
    class_column: Mapped[str] = mapped_column(String(200))
    n_examples: Mapped[int] = mapped_column(Integer)
    k_classes: Mapped[int] = mapped_column(Integer)
    d_features: Mapped[int] = mapped_column(Integer)
    majority: Mapped[float] = mapped_column(Float)
    size_kb: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    feature_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    class_labels: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    dataruns: Mapped[list[Datarun]] = relationship(back_populates="dataset")


class Datarun(Base):
    __tablename__ = "dataruns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    description: Mapped[str | None] = mapped_column(String(1000))
    # BTB configuration
    selector: Mapped[str] = mapped_column(String(500))
    k_window: Mapped[int] = mapped_column(Integer)
    tuner: Mapped[str] = mapped_column(String(500))
    r_minimum: Mapped[int] = mapped_column(Integer)
    gridding: Mapped[int] = mapped_column(Integer, default=0)
    # ATM configuration
    priority: Mapped[int] = mapped_column(Integer, default=1)
    budget_type: Mapped[BudgetType] = mapped_column(_enum(BudgetType, "budget_type"))
    budget: Mapped[float] = mapped_column(Float)  # classifiers, or minutes (walltime)
    deadline: Mapped[datetime | None] = mapped_column(Timestamp)
    metric: Mapped[str] = mapped_column(String(30))
    score_target: Mapped[ScoreTarget] = mapped_column(_enum(ScoreTarget, "score_target"))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    # Search policy: seconds one classifier may run (None: derived from the budget, 0: none),
    # each method's default configuration first, CV folds (None: by data size).
    time_limit: Mapped[float | None] = mapped_column(Float)
    warm_start: Mapped[bool] = mapped_column(Boolean, default=True)
    cv_folds: Mapped[int | None] = mapped_column(Integer)
    test_size: Mapped[float] = mapped_column(Float, default=0.3)
    # Refit the ensemble's members (or the best classifier) on all labelled rows at the end.
    # Existing dataruns (before revision 0008) keep their search-time models: false.
    refit: Mapped[bool] = mapped_column(Boolean, default=True, server_default=false())
    # Successive halving: "auto" (rungs by the data's size) or "full"; the full evaluation's
    # rung (0: one rung, every classifier fully evaluated).
    fidelity: Mapped[str] = mapped_column(String(16), default="auto", server_default="full")
    top_rung: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    train_rows: Mapped[int | None] = mapped_column(Integer)  # its training part's rows
    # Who created the datarun (e.g. a Prefect flow run id): re-running that creator finds it again.
    run_key: Mapped[str | None] = mapped_column(String(200), index=True)
    # State
    start_time: Mapped[datetime | None] = mapped_column(Timestamp)
    end_time: Mapped[datetime | None] = mapped_column(Timestamp)
    status: Mapped[DatarunStatus] = mapped_column(
        _enum(DatarunStatus, "datarun_status"), default=DatarunStatus.PENDING
    )
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="dataruns")
    hyperpartitions: Mapped[list[Hyperpartition]] = relationship(
        back_populates="datarun", order_by="Hyperpartition.id"
    )

    __table_args__ = (Index("ix_dataruns_status_priority", "status", "priority"),)


class Hyperpartition(Base):
    __tablename__ = "hyperpartitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datarun_id: Mapped[int] = mapped_column(ForeignKey("dataruns.id"), index=True)
    method: Mapped[str] = mapped_column(String(500))
    estimator_class: Mapped[str] = mapped_column(String(500))
    categoricals: Mapped[list[Any]] = mapped_column(JSON)
    tunables: Mapped[list[Any]] = mapped_column(JSON)
    constants: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[HyperpartitionStatus] = mapped_column(
        _enum(HyperpartitionStatus, "hyperpartition_status"),
        default=HyperpartitionStatus.INCOMPLETE,
    )

    datarun: Mapped[Datarun] = relationship(back_populates="hyperpartitions")


class Classifier(Base):
    __tablename__ = "classifiers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datarun_id: Mapped[int] = mapped_column(ForeignKey("dataruns.id"))
    hyperpartition_id: Mapped[int] = mapped_column(ForeignKey("hyperpartitions.id"), index=True)
    method: Mapped[str | None] = mapped_column(String(500))  # its hyperpartition's method
    # Its fidelity: below the datarun's top rung, judged on a subsample (see fidelity.py).
    rung: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    host: Mapped[str | None] = mapped_column(String(255))
    model_location: Mapped[str | None] = mapped_column(String(1000))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    metrics_location: Mapped[str | None] = mapped_column(String(1000))
    # Held-out class probabilities (parquet) that ensembles are chosen on; NULL for a model
    # without predict_proba.
    predictions_location: Mapped[str | None] = mapped_column(String(1000))
    cv_judgment_metric: Mapped[float | None] = mapped_column(Float)
    cv_judgment_metric_stdev: Mapped[float | None] = mapped_column(Float)
    test_judgment_metric: Mapped[float | None] = mapped_column(Float)
    hyperparameters_values: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_key: Mapped[str] = mapped_column(String(64))
    start_time: Mapped[datetime | None] = mapped_column(Timestamp)
    end_time: Mapped[datetime | None] = mapped_column(Timestamp)
    status: Mapped[ClassifierStatus] = mapped_column(
        _enum(ClassifierStatus, "classifier_status"), default=ClassifierStatus.RUNNING
    )
    error_message: Mapped[str | None] = mapped_column(LongText)
    error_kind: Mapped[ErrorKind | None] = mapped_column(_enum(ErrorKind, "error_kind"))
    # The same configuration refitted on every labelled row when the search ended (the model
    # load_model returns); its scores stay those of the search-time model above.
    final_model_location: Mapped[str | None] = mapped_column(String(1000))
    final_model_sha256: Mapped[str | None] = mapped_column(String(64))
    # The stored model's fit: seconds and rows (a refit's cost is estimated from them).
    fit_seconds: Mapped[float | None] = mapped_column(Float)
    fit_rows: Mapped[int | None] = mapped_column(Integer)
    # Seconds its evaluation ran in the fit process (every fit, prediction and score; a stopped
    # one: until it was stopped). The cost-aware selector charges its method with them.
    evaluation_seconds: Mapped[float | None] = mapped_column(Float)
    # Set by `atm verify` when a complete classifier's files are gone or altered.
    files_lost_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Lease: the worker holding ``claim_token`` renews ``lease_expires_at`` while it trains.
    claim_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    attempts: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        Index("ix_classifiers_datarun_status", "datarun_id", "status"),
        Index("ix_classifiers_datarun_config", "datarun_id", "hyperpartition_id", "config_key"),
        Index("ix_classifiers_datarun_rung_status", "datarun_id", "rung", "status"),
    )


class Ensemble(Base):
    """The averaged model a finished datarun hands over (one per datarun): its members are
    complete classifiers with integer weights, chosen on their out-of-fold probabilities."""

    __tablename__ = "ensembles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datarun_id: Mapped[int] = mapped_column(ForeignKey("dataruns.id"), unique=True)
    members: Mapped[list[Any]] = mapped_column(JSON)  # [[classifier_id, weight], ...] best first
    cv_judgment_metric: Mapped[float] = mapped_column(Float)
    test_judgment_metric: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    @property
    def weights(self) -> dict[int, int]:
        return {int(classifier_id): int(weight) for classifier_id, weight in self.members}

    def members_text(self) -> str:
        """``2 x #14, 1 x #3``: each member's weight and classifier id, best first."""
        return ", ".join(f"{weight} x #{i}" for i, weight in self.weights.items())
