"""Successive halving: each classifier's rung, each datarun's fidelity and top rung.

A classifier at rung r < top was judged on a subsample of the training part; the top rung is
the full evaluation. Existing rows are full evaluations of dataruns with one rung.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fidelity", sa.String(length=16), nullable=False, server_default="full")
        )
        batch_op.add_column(sa.Column("top_rung", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("train_rows", sa.Integer()))
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rung", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(
            "ix_classifiers_datarun_rung_status", ["datarun_id", "rung", "status"]
        )


def downgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_index("ix_classifiers_datarun_rung_status")
        batch_op.drop_column("rung")
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.drop_column("train_rows")
        batch_op.drop_column("top_rung")
        batch_op.drop_column("fidelity")
