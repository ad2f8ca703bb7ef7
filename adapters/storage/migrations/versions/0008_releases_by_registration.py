"""An index for the question every release asks: did another referral of this
registration already reach this recipient? Without it, that look-up read the whole
releases table (bench: its cost grew with the history).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_releases_registration_recipient", "releases", ["registration_id", "recipient_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_releases_registration_recipient", table_name="releases")
