"""Each referral's practice as a column of its own: a registration (one per patient x
welfare organisation) can hold referrals of several practices, and each practice sees the
registrations that hold one of its own referrals, its own referrals in them only. The
registration's `practice_id` is its first referral's. Filled from the stored bodies.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_referrals = sa.table(
    "referrals", sa.column("referral_id"), sa.column("body"), sa.column("practice_id")
)
_BATCH = 1_000


def upgrade() -> None:
    op.add_column("referrals", sa.Column("practice_id", sa.String(40), nullable=True))
    conn = op.get_bind()
    r = _referrals.c
    fill = (
        sa.update(_referrals)
        .where(r.referral_id == sa.bindparam("b_id"))
        .values(practice_id=sa.bindparam("b_practice"))
    )
    rows = conn.execute(sa.select(r.referral_id, r.body)).all()
    for start in range(0, len(rows), _BATCH):
        conn.execute(
            fill,
            [
                {
                    "b_id": referral_id,
                    "b_practice": orjson.loads(body)["referral"]["referrer"]["practice_id"],
                }
                for referral_id, body in rows[start : start + _BATCH]
            ],
        )
    op.create_index(
        "ix_referrals_registration_practice", "referrals", ["registration_id", "practice_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_referrals_registration_practice", table_name="referrals")
    with op.batch_alter_table("referrals") as batch:
        batch.drop_column("practice_id")
