"""The processing log by record position (topic, partition, offset): each batch looks up
whether another instance applied its records already (a partition moved to it in a
rebalance while this one still held a fetched batch), so a stale copy of an older record
is never applied on top of a newer one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_processing_log_position", "processing_log", ["topic", "partition", "offset"]
    )


def downgrade() -> None:
    op.drop_index("ix_processing_log_position", table_name="processing_log")
