"""The end of a consent's period is acted on: `expires_at` holds the first moment after an
active consent's period until the timer has ended it (revoke notices with reason
`consent-expired` where no other consent covers the pair, and the recipient's access
ended), with a partial index of those rows only, as for the starts (0009).

Filled from the stored consents: an active consent whose period ended before this
migration is ended at the first tick after it, so recipients it covered and that nothing
covers now are told then (before, the end of a period stopped new releases and updates
but left the recipient's access and told nobody).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import datetime

import orjson
import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UtcDateTime, consent_expires_at

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None
PAGE = 1000

_consents = sa.table(
    "consents",
    sa.column("consent_id", sa.String),
    sa.column("status", sa.String),
    sa.column("body", sa.Text),
    sa.column("expires_at", UtcDateTime),
)


def upgrade() -> None:
    op.add_column("consents", sa.Column("expires_at", UtcDateTime, nullable=True))
    expiring = _consents.c.expires_at.is_not(None)
    op.create_index(
        "ix_consents_expiring",
        "consents",
        ["expires_at"],
        sqlite_where=expiring,
        postgresql_where=expiring,
    )
    conn = op.get_bind()
    c = _consents.c
    fill = _consents.update().where(c.consent_id == sa.bindparam("b_id"))
    last = ""
    while True:  # a page at a time: the bodies of every consent need not fit in memory
        page = conn.execute(
            sa.select(c.consent_id, c.body)
            .where(c.status == "active", c.consent_id > last)
            .order_by(c.consent_id)
            .limit(PAGE)
        ).all()
        if not page:
            return
        filled = []
        for consent_id, body in page:
            end = orjson.loads(body).get("period_end")
            expires_at = consent_expires_at("active", datetime.fromisoformat(end) if end else None)
            if expires_at is not None:
                filled.append({"b_id": consent_id, "expires_at": expires_at})
        if filled:
            conn.execute(fill.values(expires_at=sa.bindparam("expires_at")), filled)
        last = page[-1][0]


def downgrade() -> None:
    op.drop_index("ix_consents_expiring", table_name="consents")
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("expires_at")
