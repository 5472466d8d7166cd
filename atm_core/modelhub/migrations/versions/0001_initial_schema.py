"""Initial schema: datasets, dataruns, hyperpartitions, classifiers (with leases).

Revision ID: 0001
Revises:
Create Date: 2026-11-29 14:10:07.985688
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("train_path", sa.String(length=1000), nullable=False),
        sa.Column("test_path", sa.String(length=1000), nullable=True),
        sa.Column("class_column", sa.String(length=200), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("k_classes", sa.Integer(), nullable=False),
        sa.Column("d_features", sa.Integer(), nullable=False),
        sa.Column("majority", sa.Float(), nullable=False),
        sa.Column("size_kb", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("feature_schema", sa.JSON(), nullable=False),
        sa.Column("class_labels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_datasets_content_hash"), ["content_hash"], unique=False
        )

    op.create_table(
        "dataruns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("selector", sa.String(length=500), nullable=False),
        sa.Column("k_window", sa.Integer(), nullable=False),
        sa.Column("tuner", sa.String(length=500), nullable=False),
        sa.Column("r_minimum", sa.Integer(), nullable=False),
        sa.Column("gridding", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column(
            "budget_type",
            sa.Enum(
                "classifier",
                "walltime",
                name="budget_type",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(), nullable=True),
        sa.Column("metric", sa.String(length=30), nullable=False),
        sa.Column(
            "score_target",
            sa.Enum(
                "cv",
                "test",
                "mu_sigma",
                name="score_target",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("test_size", sa.Float(), nullable=False),
        sa.Column("run_key", sa.String(length=200), nullable=True),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "complete",
                name="datarun_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataruns_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index("ix_dataruns_status_priority", ["status", "priority"], unique=False)
        batch_op.create_index(batch_op.f("ix_dataruns_run_key"), ["run_key"], unique=False)

    op.create_table(
        "hyperpartitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("datarun_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=500), nullable=False),
        sa.Column("estimator_class", sa.String(length=500), nullable=False),
        sa.Column("categoricals", sa.JSON(), nullable=False),
        sa.Column("tunables", sa.JSON(), nullable=False),
        sa.Column("constants", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "incomplete",
                "gridding_done",
                "errored",
                name="hyperpartition_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["datarun_id"],
            ["dataruns.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hyperpartitions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hyperpartitions_datarun_id"), ["datarun_id"], unique=False
        )

    op.create_table(
        "classifiers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("datarun_id", sa.Integer(), nullable=False),
        sa.Column("hyperpartition_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("model_location", sa.String(length=1000), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("metrics_location", sa.String(length=1000), nullable=True),
        sa.Column("cv_judgment_metric", sa.Float(), nullable=True),
        sa.Column("cv_judgment_metric_stdev", sa.Float(), nullable=True),
        sa.Column("test_judgment_metric", sa.Float(), nullable=True),
        sa.Column("hyperparameters_values", sa.JSON(), nullable=False),
        sa.Column("config_key", sa.String(length=64), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "errored",
                "complete",
                name="classifier_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "error_message",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column("claim_token", sa.String(length=36), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["datarun_id"],
            ["dataruns.id"],
        ),
        sa.ForeignKeyConstraint(
            ["hyperpartition_id"],
            ["hyperpartitions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_classifiers_datarun_config",
            ["datarun_id", "hyperpartition_id", "config_key"],
            unique=False,
        )
        batch_op.create_index(
            "ix_classifiers_datarun_status", ["datarun_id", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_classifiers_hyperpartition_id"), ["hyperpartition_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_classifiers_hyperpartition_id"))
        batch_op.drop_index("ix_classifiers_datarun_status")
        batch_op.drop_index("ix_classifiers_datarun_config")

    op.drop_table("classifiers")
    with op.batch_alter_table("hyperpartitions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hyperpartitions_datarun_id"))

    op.drop_table("hyperpartitions")
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataruns_run_key"))
        batch_op.drop_index("ix_dataruns_status_priority")
        batch_op.drop_index(batch_op.f("ix_dataruns_dataset_id"))

    op.drop_table("dataruns")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_content_hash"))

    op.drop_table("datasets")
