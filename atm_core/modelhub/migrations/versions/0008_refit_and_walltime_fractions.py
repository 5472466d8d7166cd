"""Final models refitted on every labelled row, and walltime budgets in fractions of a minute.

``dataruns.refit``: whether a finished search refits its ensemble's members (or its best
classifier) on all labelled rows; ``classifiers.final_model_location`` / ``final_model_sha256``:
where that refit model is; ``classifiers.fit_seconds`` / ``fit_rows``: how long the stored
model's fit took on how many rows (what the refit's time is estimated from).
``dataruns.budget`` becomes a float (0.5 minutes).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 06:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.alter_column(
            "budget", existing_type=sa.Integer(), type_=sa.Float(), existing_nullable=False
        )
        batch_op.add_column(
            sa.Column("refit", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("final_model_location", sa.String(length=1000)))
        batch_op.add_column(sa.Column("final_model_sha256", sa.String(length=64)))
        batch_op.add_column(sa.Column("fit_seconds", sa.Float()))
        batch_op.add_column(sa.Column("fit_rows", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_column("fit_rows")
        batch_op.drop_column("fit_seconds")
        batch_op.drop_column("final_model_sha256")
        batch_op.drop_column("final_model_location")
    with op.batch_alter_table("dataruns", schema=None) as batch_op:
        batch_op.drop_column("refit")
        batch_op.alter_column(
            "budget", existing_type=sa.Float(), type_=sa.Integer(), existing_nullable=False
        )
