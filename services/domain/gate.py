"""The consent gate (CONTRACT §4): hold a referral until a covering consent exists, then
release it once per referral x recipient - whichever of the two arrived first.

Runs inside one store transaction; the caller turns the returned releases into outbox
messages in that same transaction, so state and outputs commit together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.consent import Consent
from schemas.ids import registration_id_for
from schemas.referral import Referral
from schemas.registration import (
    ConsentRecorded,
    GateEvent,
    ReferralAwaitingConsent,
    ReferralReceived,
    ReferralRedelivered,
    ReferralReleased,
    RegistrationStatus,
    StoredReferral,
)
from services.domain.consent import first_covering
from services.domain.ports import GateStore

HUB = "schakel-hub"


@dataclass
class GateResult:
    events: list[GateEvent] = field(default_factory=list)
    releases: list[tuple[ReferralReleased, Referral]] = field(default_factory=list)


def _release(
    store: GateStore, stored: StoredReferral, consent: Consent, at: datetime, result: GateResult
) -> None:
    event = ReferralReleased(
        referral_id=stored.referral.referral_id,
        registration_id=stored.registration_id,
        recipient_id=stored.recipient_id,
        consent_id=consent.consent_id,
        released_at=at,
    )
    store.record_release(event)
    store.add_status(stored.registration_id, RegistrationStatus.RELEASED, at, HUB)
    result.events.append(event)
    result.releases.append((event, stored.referral))


def on_referral(
    store: GateStore, referral: Referral, recipient_id: str, at: datetime
) -> GateResult:
    """A referral arrived (already validated and routed)."""
    result = GateResult()
    existing = store.referral(referral.referral_id)
    if existing is not None and existing.referral == referral:
        result.events.append(ReferralRedelivered(referral_id=referral.referral_id, at=at))
        return result

    released = store.released_to(referral.referral_id)
    if existing is not None and released:
        # Already released: keep the recipient it went to. Forwarding the change as
        # nl.schakel.referral-updated.v1 is the registration service's job (issue 5);
        # until then the hub keeps the newest copy for that.
        recipient_id = existing.recipient_id
    stored = StoredReferral(
        referral=referral,
        recipient_id=recipient_id,
        registration_id=registration_id_for(referral.referral_id, recipient_id),
        received_at=existing.received_at if existing is not None else at,
    )
    store.put_referral(stored)
    if existing is None or existing.registration_id != stored.registration_id:
        store.add_status(
            stored.registration_id, RegistrationStatus.RECEIVED, at, referral.referrer.practice_id
        )
        result.events.append(
            ReferralReceived(
                referral_id=referral.referral_id,
                registration_id=stored.registration_id,
                recipient_id=recipient_id,
                at=at,
            )
        )
    if recipient_id in released:
        return result

    consent = first_covering(
        store.consents_for(referral.referral_id, referral.client.bsn), referral, recipient_id, at
    )
    if consent is not None:
        _release(store, stored, consent, at, result)
    elif existing is None or existing.registration_id != stored.registration_id:
        store.add_status(stored.registration_id, RegistrationStatus.WAITING_FOR_CONSENT, at, HUB)
        result.events.append(
            ReferralAwaitingConsent(
                referral_id=referral.referral_id,
                registration_id=stored.registration_id,
                recipient_id=recipient_id,
                at=at,
            )
        )
    return result


def on_consent(store: GateStore, consent: Consent, at: datetime) -> GateResult:
    """A consent arrived (granted, or withdrawn: status inactive/rejected).

    A consent id once withdrawn stays withdrawn: a late or replayed grant of the same id
    cannot revive it (DOMAIN §5)."""
    result = GateResult()
    existing = store.consent(consent.consent_id)
    if existing is not None and existing.status != "active" and consent.status == "active":
        result.events.append(
            ConsentRecorded(
                consent_id=consent.consent_id,
                status=existing.status,
                recipients=existing.recipients,
                at=at,
            )
        )
        return result
    if existing is not None and consent.status != "active":
        # A withdrawal need not repeat the provision: it ends the consent as recorded.
        consent = existing.model_copy(update={"status": consent.status})
    store.put_consent(consent, at)
    result.events.append(
        ConsentRecorded(
            consent_id=consent.consent_id,
            status=consent.status,
            recipients=consent.recipients,
            at=at,
        )
    )
    if consent.status != "active":
        return result

    if consent.referrals:
        candidates = [store.referral(ref.value) for ref in consent.referrals]
    elif consent.patient_bsn is not None:
        candidates = list(store.referrals_of_patient(consent.patient_bsn))
    else:
        candidates = []
    for stored in candidates:
        if stored is None or stored.recipient_id not in consent.recipients:
            continue
        if stored.recipient_id in store.released_to(stored.referral.referral_id):
            continue
        if first_covering([consent], stored.referral, stored.recipient_id, at) is not None:
            _release(store, stored, consent, at, result)
    return result
