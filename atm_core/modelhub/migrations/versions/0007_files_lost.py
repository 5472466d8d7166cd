"""When a complete classifier's stored files were found lost or altered (``atm verify``).

A store can lose objects (a bucket replaced, a lifecycle rule, a hand): the row stays
``complete`` (it was trained and scored), flagged so that rankings, ensembles and loading
skip it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("files_lost_at", timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_column("files_lost_at")
