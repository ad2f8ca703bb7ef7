"""When does a consent cover a release? (CONTRACT §3-4, DOMAIN §5)

A refusal is a return value, not an exception: the gate asks, and waits when told no.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from schemas.consent import Consent, DataClass
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


def _in_period(consent: Consent, at: datetime) -> Decision | None:
    if consent.period_start is not None and at < consent.period_start:
        return Decision(False, "consent period not yet started")
    if consent.period_end is not None and at > consent.period_end:
        return Decision(False, "consent period ended")
    return None


def applies(consent: Consent, referral: Referral, recipient_id: str, at: datetime) -> Decision:
    """Is `consent` a permit, in force at `at`, for this patient, this referral and this
    recipient? (Which data it lets through is its `classes`.)"""
    if consent.is_objection:
        return Decision(False, "an objection permits nothing")
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
    outside = _in_period(consent, at)
    return outside if outside is not None else Decision(True, "applies")


def covers(consent: Consent, referral: Referral, recipient_id: str, at: datetime) -> Decision:
    """Does `consent` on its own permit releasing `referral` to `recipient_id` at `at`?"""
    decision = applies(consent, referral, recipient_id, at)
    if decision and DataClass.REFERRAL not in consent.classes:
        return Decision(False, "consent does not cover the referral itself")
    return decision


def objects(consent: Consent, referral: Referral, at: datetime) -> bool:
    """An active objection of this patient: no exchange at all."""
    return (
        consent.is_objection
        and consent.status == "active"
        and consent.patient_bsn == referral.client.bsn
        and _in_period(consent, at) is None
    )


@dataclass(frozen=True, slots=True)
class Coverage:
    """Everything the consents in force say about one referral x recipient at one moment."""

    consent_id: str | None
    classes: frozenset[DataClass]
    blocked: bool

    @property
    def covered(self) -> bool:
        return self.consent_id is not None and not self.blocked


def coverage(
    consents: Iterable[Consent], referral: Referral, recipient_id: str, at: datetime
) -> Coverage:
    """Covered when no objection is active and some applicable consent covers the referral
    itself; what may be released is the union of the classes of every applicable consent
    (contact data may be consented to separately). The release is based on the first
    covering consent by id (deterministic)."""
    consents = sorted(consents, key=lambda c: c.consent_id)
    blocked = any(objects(c, referral, at) for c in consents)
    applicable = [c for c in consents if applies(c, referral, recipient_id, at)]
    basis = next((c.consent_id for c in applicable if DataClass.REFERRAL in c.classes), None)
    classes = frozenset().union(*(c.classes for c in applicable)) if basis else frozenset()
    return Coverage(basis, classes, blocked)
