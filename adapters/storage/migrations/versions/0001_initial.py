"""Consent gate, registrations and outbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import Serial, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("registration_id", sa.String(36), nullable=False),
        sa.Column("recipient_id", sa.String(40), nullable=False),
        sa.Column("patient_bsn", sa.String(9), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_referrals_patient_bsn", "referrals", ["patient_bsn"])
    op.create_table(
        "consents",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("patient_bsn", sa.String(9), nullable=True),
        sa.Column("names_referrals", sa.Boolean, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_consents_patient_bsn", "consents", ["patient_bsn"])
    op.create_table(
        "consent_referrals",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("referral_id", sa.String(64), primary_key=True),
    )
    op.create_index("ix_consent_referrals_referral_id", "consent_referrals", ["referral_id"])
    op.create_table(
        "releases",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("recipient_id", sa.String(40), primary_key=True),
        sa.Column("registration_id", sa.String(36), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("released_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "registrations",
        sa.Column("registration_id", sa.String(36), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("recipient_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_registrations_referral_id", "registrations", ["referral_id"])
    op.create_table(
        "registration_events",
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("registration_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
    )
    op.create_index(
        "ix_registration_events_registration_id", "registration_events", ["registration_id"]
    )
    op.create_table(
        "outbox",
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("published_at", UtcDateTime, nullable=True),
        sa.UniqueConstraint("message_id", name="uq_outbox_message_id"),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])


def downgrade() -> None:
    for table in (
        "outbox",
        "registration_events",
        "registrations",
        "releases",
        "consent_referrals",
        "consents",
        "referrals",
    ):
        op.drop_table(table)
