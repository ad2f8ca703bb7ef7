"""Partial indexes for what the timer asks every tick (consents waiting for their start,
registrations still waiting for contact, registrations holding personal data past their
retention): a tick holds the write lock, and without these its scans read the whole
history (bench soak: at 193,500 registrations two of them held the lock 115-180 ms a tick,
and longer as the store grew). The plain index on `contact_due_at` is replaced by one on the
open registrations only.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_consents = sa.table("consents", sa.column("started", sa.Boolean))
_registrations = sa.table(
    "registrations",
    sa.column("contact_made_at"),
    sa.column("overdue_at"),
    sa.column("closed_at"),
    sa.column("patient_bsn"),
)


def _where(clause: sa.ColumnElement[bool]) -> dict[str, sa.ColumnElement[bool]]:
    return {"sqlite_where": clause, "postgresql_where": clause}


def upgrade() -> None:
    r = _registrations.c
    op.create_index(
        "ix_consents_not_started",
        "consents",
        ["period_start"],
        **_where(_consents.c.started.is_(False)),
    )
    op.drop_index("ix_registrations_contact_due_at", table_name="registrations")
    op.create_index(
        "ix_registrations_contact_open",
        "registrations",
        ["contact_due_at"],
        **_where(
            sa.and_(r.contact_made_at.is_(None), r.overdue_at.is_(None), r.closed_at.is_(None))
        ),
    )
    op.create_index(
        "ix_registrations_retention",
        "registrations",
        ["retain_until"],
        **_where(r.patient_bsn.is_not(None)),
    )


def downgrade() -> None:
    op.drop_index("ix_registrations_retention", table_name="registrations")
    op.drop_index("ix_registrations_contact_open", table_name="registrations")
    op.create_index("ix_registrations_contact_due_at", "registrations", ["contact_due_at"])
    op.drop_index("ix_consents_not_started", table_name="consents")
