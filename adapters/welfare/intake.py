"""Welfare intake JSON from a referral (CONTRACT §4). Pure.

Minimisation is structural: `WelfareIntake` has no field for a BSN, codes, medication or
notes, and only the one-line reason travels.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from adapters.broker.cloudevents import ce_headers
from schemas.ids import release_id
from schemas.messages import OutboundMessage
from schemas.referral import Referral
from schemas.registration import ReferralReleased
from schemas.topics import CE_REFERRAL_RELEASED
from schemas.welfare import IntakeAddress, IntakeClient, IntakeReferrer, WelfareIntake


def intake_from_referral(
    referral: Referral,
    *,
    registration_id: str,
    consent_id: str,
    released_at: datetime,
    contact_within_days: int,
) -> WelfareIntake:
    client = referral.client
    address = client.address
    return WelfareIntake(
        referral_id=referral.referral_id,
        registration_id=registration_id,
        released_at=released_at,
        client=IntakeClient(
            name=client.name,
            birth_date=client.birth_date,
            phone=client.phone,
            email=client.email,
            address=IntakeAddress(**address.model_dump()) if address is not None else None,
        ),
        reason=referral.reason,
        referrer=IntakeReferrer(
            name=referral.referrer.name,
            agb=referral.referrer.agb,
            practice=referral.referrer.practice_name,
        ),
        contact_within_days=contact_within_days,
        consent_id=consent_id,
    )


def intake_json(intake: WelfareIntake) -> bytes:
    """Absent fields are left out, not sent as null."""
    return orjson.dumps(intake.model_dump(mode="json", exclude_none=True))


def release_message(
    release: ReferralReleased,
    referral: Referral,
    *,
    topic: str,
    contact_within_days: int,
    traceparent: str,
) -> OutboundMessage:
    """The `nl.schakel.referral-released.v1` message for one release."""
    intake = intake_from_referral(
        referral,
        registration_id=release.registration_id,
        consent_id=release.consent_id,
        released_at=release.released_at,
        contact_within_days=contact_within_days,
    )
    ce_id = release_id(release.referral_id, release.recipient_id)
    return OutboundMessage(
        message_id=ce_id,
        topic=topic,
        key=release.referral_id.encode(),
        value=intake_json(intake),
        headers=ce_headers(
            ce_id=ce_id,
            ce_type=CE_REFERRAL_RELEASED,
            time=release.released_at,
            traceparent=traceparent,
            subject=release.referral_id,
        ),
    )
