"""One dataset per content: content_hash becomes unique.

Concurrent registrations of the same data (several flow runs or ``enter_data`` calls at once)
created duplicate datasets on MySQL/MariaDB and PostgreSQL; the unique index lets the loser of
the race find the winner's row instead. Duplicates an older ModelHub may hold are merged into
the oldest dataset first (its dataruns keep working).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 15:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    oldest: dict[str, int] = {}
    rows = connection.execute(sa.text("SELECT id, content_hash FROM datasets ORDER BY id"))
    for dataset_id, content_hash in rows.all():
        if content_hash not in oldest:
            oldest[content_hash] = dataset_id
            continue
        connection.execute(
            sa.text("UPDATE dataruns SET dataset_id = :keep WHERE dataset_id = :duplicate"),
            {"keep": oldest[content_hash], "duplicate": dataset_id},
        )
        connection.execute(sa.text("DELETE FROM datasets WHERE id = :id"), {"id": dataset_id})
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_content_hash"))
        batch_op.create_index(batch_op.f("ix_datasets_content_hash"), ["content_hash"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_content_hash"))
        batch_op.create_index(
            batch_op.f("ix_datasets_content_hash"), ["content_hash"], unique=False
        )
