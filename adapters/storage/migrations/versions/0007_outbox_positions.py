"""Where each outbox message landed on the broker (partition, offset): the relay checks the
topics from there after a crash, so a message acknowledged but not yet marked is not sent
twice.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("sent_partition", sa.Integer, nullable=True))
    op.add_column("outbox", sa.Column("sent_offset", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("sent_offset")
        batch.drop_column("sent_partition")
