"""The method of each classifier, stored on its row.

Leaderboards, status tables and ensemble summaries name each classifier's method; reading it
from the classifier's hyperpartition cost a lookup per classifier. Existing rows are filled in
from their hyperpartitions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("method", sa.String(length=500), nullable=True))
    classifiers = sa.table("classifiers", sa.column("method"), sa.column("hyperpartition_id"))
    partitions = sa.table("hyperpartitions", sa.column("id"), sa.column("method"))
    op.execute(
        classifiers.update().values(
            method=sa.select(partitions.c.method)
            .where(partitions.c.id == classifiers.c.hyperpartition_id)
            .scalar_subquery()
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_column("method")
