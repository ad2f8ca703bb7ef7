"""Welfare intake JSON from a disclosure (CONTRACT §4), and the revoke notice. Pure.

Minimisation happened before (`services.domain.minimise`); this renders what is there.
`WelfareIntake` has no field for a BSN, codes, medication or notes in any case.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from schemas.disclosure import Disclosure
from schemas.welfare import IntakeAddress, IntakeClient, IntakeReferrer, WelfareIntake


def intake_from_disclosure(
    disclosure: Disclosure,
    *,
    registration_id: str,
    consent_id: str,
    released_at: datetime,
    contact_within_days: int,
) -> WelfareIntake:
    address = disclosure.address
    return WelfareIntake(
        referral_id=disclosure.referral_id,
        registration_id=registration_id,
        released_at=released_at,
        client=IntakeClient(
            name=disclosure.name,
            birth_date=disclosure.birth_date,
            phone=disclosure.phone,
            email=disclosure.email,
            address=IntakeAddress(**address.model_dump()) if address is not None else None,
        ),
        reason=disclosure.reason or "",
        referrer=IntakeReferrer(
            name=disclosure.referrer.name,
            agb=disclosure.referrer.agb,
            practice=disclosure.referrer.practice_name,
        ),
        contact_within_days=contact_within_days,
        consent_id=consent_id,
    )


def intake_json(intake: WelfareIntake) -> bytes:
    """Absent fields are left out, not sent as null."""
    return orjson.dumps(intake.model_dump(mode="json", exclude_none=True))


def revoked_json(
    *, referral_id: str, registration_id: str, revoked_at: datetime, reason: str
) -> bytes:
    """`nl.schakel.referral-revoked.v1` (CONTRACT §4): ids only, nothing personal."""
    return orjson.dumps(
        {
            "referral_id": referral_id,
            "registration_id": registration_id,
            "revoked_at": revoked_at.isoformat().replace("+00:00", "Z"),
            "reason": reason,
        }
    )
