"""Console sessions signed out: a session's id stays here until its cookie would have
expired, and every instance refuses that cookie meanwhile (a copy of it included).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ended_sessions",
        sa.Column("session_id", sa.String(32), primary_key=True),
        sa.Column("ends_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_ended_sessions_ends_at", "ended_sessions", ["ends_at"])


def downgrade() -> None:
    op.drop_table("ended_sessions")
