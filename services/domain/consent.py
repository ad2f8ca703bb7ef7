"""When does a consent cover a release? (CONTRACT §3-4, DOMAIN §5)

A refusal is a return value, not an exception: the gate asks, and waits when told no.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.consent import Consent
from schemas.referral import Referral


@dataclass(frozen=True, slots=True)
class Decision:
    covered: bool
    why: str

    def __bool__(self) -> bool:
        return self.covered


def names_referral(consent: Consent, referral: Referral) -> bool:
    """A consent names a referral by its identifier value, and by system when both have one."""
    for ref in consent.referrals:
        if ref.value != referral.referral_id:
            continue
        if ref.system and referral.identifier_system and ref.system != referral.identifier_system:
            continue
        return True
    return False


def covers(consent: Consent, referral: Referral, recipient_id: str, at: datetime) -> Decision:
    """Does `consent` permit releasing `referral` to `recipient_id` at moment `at`?"""
    if consent.status != "active":
        return Decision(False, f"consent is {consent.status}")
    if recipient_id not in consent.recipients:
        return Decision(False, "recipient not named in consent")
    if consent.patient_bsn is not None and consent.patient_bsn != referral.client.bsn:
        return Decision(False, "consent is for another patient")
    if consent.referrals:
        if not names_referral(consent, referral):
            return Decision(False, "consent names other referrals")
    elif consent.patient_bsn is None:
        return Decision(False, "consent names neither referral nor patient")
    if consent.period_start is not None and at < consent.period_start:
        return Decision(False, "consent period not yet started")
    if consent.period_end is not None and at > consent.period_end:
        return Decision(False, "consent period ended")
    return Decision(True, "covered")


def first_covering(
    consents: list[Consent], referral: Referral, recipient_id: str, at: datetime
) -> Consent | None:
    """The covering consent the release is based on; deterministic (by consent id)."""
    for consent in sorted(consents, key=lambda c: c.consent_id):
        if covers(consent, referral, recipient_id, at):
            return consent
    return None
