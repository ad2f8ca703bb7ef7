"""Outbound messages the broker refused as too large are kept apart (`refused_at`), not
only logged: `schakel outbox refused` lists them, `schakel outbox requeue --refused` sends
them once the topic takes them, and `/metrics` counts those still unsent. A partial index
holds only those rows, so the count at every scrape reads none of the others.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UtcDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_outbox = sa.table("outbox", sa.column("refused_at"))


def upgrade() -> None:
    op.add_column("outbox", sa.Column("refused_at", UtcDateTime, nullable=True))
    refused = _outbox.c.refused_at.is_not(None)
    op.create_index(
        "ix_outbox_refused", "outbox", ["id"], sqlite_where=refused, postgresql_where=refused
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_refused", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("refused_at")
