"""Outbox rows handed back to the relay after the broker lost its state are checked
against the topics before they are sent again (`check_first`): with several hub
instances, each one's recovery hands back what it saw published since the broker was last
seen intact, which can include what the relaying instance has just sent to the new
broker.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "outbox",
        sa.Column("check_first", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("check_first")
