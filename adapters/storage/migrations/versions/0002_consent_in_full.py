"""Objections, consent periods that start later, release fingerprints and revocations,
and counters (iWmo message numbers).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.sql import true

from adapters.storage.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "consents", sa.Column("kind", sa.String(16), nullable=False, server_default="permit")
    )
    op.add_column("consents", sa.Column("period_start", UtcDateTime, nullable=True))
    op.add_column(
        "consents", sa.Column("started", sa.Boolean, nullable=False, server_default=true())
    )
    op.add_column(
        "releases", sa.Column("fingerprint", sa.String(64), nullable=False, server_default="")
    )
    op.add_column("releases", sa.Column("revoked_at", UtcDateTime, nullable=True))
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("counters")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("fingerprint")
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("started")
        batch.drop_column("period_start")
        batch.drop_column("kind")
