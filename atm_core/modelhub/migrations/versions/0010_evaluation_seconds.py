"""What each classifier's evaluation cost: the seconds it ran in the fit process.

The cost-aware selector charges each method the seconds its configurations took (a stopped
one until it was stopped). Existing rows have none: the selector charges each of them what
its method's recorded configurations typically cost.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evaluation_seconds", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_column("evaluation_seconds")
