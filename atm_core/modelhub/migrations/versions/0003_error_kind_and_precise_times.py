"""Classifiers record why they errored; MySQL/MariaDB keep fractions of a second.

``error_kind`` separates a model's own failures (which count against its hyperpartition)
from lost workers and infrastructure outages. On MySQL/MariaDB every timestamp becomes
DATETIME(6): leases of a few seconds need sub-second precision there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 15:20:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMPS = {
    "datasets": ["created_at"],
    "dataruns": ["deadline", "start_time", "end_time", "created_at"],
    "classifiers": ["start_time", "end_time", "lease_expires_at"],
}
NOT_NULL = {("datasets", "created_at"), ("dataruns", "created_at")}
ERROR_KIND = sa.Enum(
    "model",
    "worker_lost",
    "infrastructure",
    name="error_kind",
    native_enum=False,
    create_constraint=True,
    length=16,
)


def upgrade() -> None:
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_kind", ERROR_KIND, nullable=True))
    op.execute(
        "UPDATE classifiers SET error_kind = CASE WHEN error_message LIKE 'worker lost%' "
        "THEN 'worker_lost' ELSE 'model' END WHERE status = 'errored'"
    )
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        _set_timestamp_type(mysql.DATETIME(fsp=6), sa.DateTime())


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        _set_timestamp_type(sa.DateTime(), mysql.DATETIME(fsp=6))
    with op.batch_alter_table("classifiers", schema=None) as batch_op:
        batch_op.drop_column("error_kind")


def _set_timestamp_type(new: sa.types.TypeEngine, old: sa.types.TypeEngine) -> None:
    for table, columns in TIMESTAMPS.items():
        for column in columns:
            op.alter_column(
                table,
                column,
                type_=new,
                existing_type=old,
                existing_nullable=(table, column) not in NOT_NULL,
            )
