"""One registration per patient x welfare organisation: patient, practice, contact term,
overdue, closing and retention; the feedback received.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import Serial, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    "patient_bsn",
    "practice_id",
    "contact_due_at",
    "contact_made_at",
    "overdue_at",
    "closed_at",
    "retain_until",
)


def upgrade() -> None:
    op.add_column("registrations", sa.Column("patient_bsn", sa.String(9), nullable=True))
    op.add_column("registrations", sa.Column("practice_id", sa.String(40), nullable=True))
    op.add_column("registrations", sa.Column("contact_due_at", UtcDateTime, nullable=True))
    op.add_column("registrations", sa.Column("contact_made_at", UtcDateTime, nullable=True))
    op.add_column("registrations", sa.Column("overdue_at", UtcDateTime, nullable=True))
    op.add_column("registrations", sa.Column("closed_at", UtcDateTime, nullable=True))
    op.add_column("registrations", sa.Column("retain_until", UtcDateTime, nullable=True))
    op.create_index("ix_registrations_contact_due_at", "registrations", ["contact_due_at"])
    op.create_index(
        "ix_registrations_patient_recipient", "registrations", ["patient_bsn", "recipient_id"]
    )
    op.create_table(
        "feedback",
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("registration_id", sa.String(36), nullable=False),
        sa.Column("organisation", sa.String(40), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("message_id", name="uq_feedback_message_id"),
    )
    op.create_index("ix_feedback_referral_id", "feedback", ["referral_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_index("ix_registrations_patient_recipient", "registrations")
    op.drop_index("ix_registrations_contact_due_at", "registrations")
    with op.batch_alter_table("registrations") as batch:
        for column in _COLUMNS:
            batch.drop_column(column)
