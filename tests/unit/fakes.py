"""An in-memory GateStore: the domain port, implemented for unit tests (no Mock())."""

from __future__ import annotations

from datetime import datetime

from schemas.consent import Consent
from schemas.registration import ReferralReleased, StoredReferral


class MemoryGateStore:
    def __init__(self) -> None:
        self.referrals: dict[str, StoredReferral] = {}
        self.consents: dict[str, Consent] = {}
        self.releases: list[ReferralReleased] = []
        self.timeline: list[tuple[str, str, str]] = []

    def referral(self, referral_id: str) -> StoredReferral | None:
        return self.referrals.get(referral_id)

    def put_referral(self, stored: StoredReferral) -> None:
        self.referrals[stored.referral.referral_id] = stored

    def referrals_of_patient(self, bsn: str) -> list[StoredReferral]:
        return sorted(
            (s for s in self.referrals.values() if s.referral.client.bsn == bsn),
            key=lambda s: s.referral.referral_id,
        )

    def consent(self, consent_id: str) -> Consent | None:
        return self.consents.get(consent_id)

    def put_consent(self, consent: Consent, received_at: datetime) -> None:
        self.consents[consent.consent_id] = consent

    def consents_for(self, referral_id: str, bsn: str) -> list[Consent]:
        return sorted(
            (
                c
                for c in self.consents.values()
                if any(r.value == referral_id for r in c.referrals)
                or (not c.referrals and c.patient_bsn == bsn)
            ),
            key=lambda c: c.consent_id,
        )

    def released_to(self, referral_id: str) -> set[str]:
        return {r.recipient_id for r in self.releases if r.referral_id == referral_id}

    def record_release(self, release: ReferralReleased) -> None:
        self.releases.append(release)

    def add_status(self, registration_id: str, status: str, at: datetime, by: str) -> None:
        self.timeline.append((registration_id, str(status), by))
