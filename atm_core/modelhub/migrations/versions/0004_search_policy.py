"""Datarun search policy: per-classifier time limit, warm start, CV folds.

``time_limit`` (seconds; NULL derives it from the budget, 0 disables it) stops a fit that runs
too long; ``warm_start`` tries each method's default configuration before the selector takes
over; ``cv_folds`` (NULL: chosen by data size) trades CV precision for speed on large data.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 16:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_limit", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("warm_start", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("cv_folds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.drop_column("cv_folds")
        batch_op.drop_column("warm_start")
        batch_op.drop_column("time_limit")
