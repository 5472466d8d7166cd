"""Ensembles: held-out class probabilities per classifier, and one ensemble per datarun.

``classifiers.predictions_location`` points at a classifier's out-of-fold and test
probabilities (parquet); ``ensembles`` keeps the members and weights chosen on them when a
datarun finishes, with the ensemble's out-of-fold and test scores.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 11:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("predictions_location", sa.String(length=1000), nullable=True)
        )
    timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    op.create_table(
        "ensembles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("datarun_id", sa.Integer(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("cv_judgment_metric", sa.Float(), nullable=False),
        sa.Column("test_judgment_metric", sa.Float(), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.ForeignKeyConstraint(["datarun_id"], ["dataruns.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("datarun_id"),
    )


def downgrade() -> None:
    op.drop_table("ensembles")
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_column("predictions_location")
