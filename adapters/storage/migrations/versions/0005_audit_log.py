"""The hash-chained audit log, hub secrets (the pseudonym key), dead-letter reprocessing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # API reads are audit entries now (one chain for everything); nothing was written yet
    # that the chain must keep, and access_events never left this release.
    op.drop_table("access_events")
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(40), nullable=False),
        sa.Column("recipient", sa.String(40), nullable=True),
        sa.Column("referral_id", sa.String(64), nullable=True),
        sa.Column("registration_id", sa.String(36), nullable=True),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("canonical", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_log_referral_id", "audit_log", ["referral_id"])
    op.create_index("ix_audit_log_patient", "audit_log", ["patient"])
    op.create_table(
        "hub_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    op.create_table(
        "reprocessed",
        sa.Column("dead_letter_id", sa.String(36), primary_key=True),
        sa.Column("reprocess_id", sa.String(36), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("by", sa.String(40), nullable=False),
        sa.Column("consumed_at", UtcDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("reprocessed")
    op.drop_table("hub_secrets")
    op.drop_table("audit_log")
    op.create_table(
        "access_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(40), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("registration_id", sa.String(36), nullable=True),
        sa.Column("referral_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
