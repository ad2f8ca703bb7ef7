"""An in-memory GateStore: the domain port, implemented for unit and property tests
(no Mock()). It must behave like the SQL store; the property test runs both."""

from __future__ import annotations

from datetime import datetime

from schemas.consent import Consent
from schemas.registration import ReleaseState, StoredReferral


class MemoryGateStore:
    def __init__(self) -> None:
        self.referrals: dict[str, StoredReferral] = {}
        self.consents: dict[str, Consent] = {}
        self.started: dict[str, bool] = {}
        self.releases: dict[tuple[str, str], ReleaseState] = {}
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
        self.started[consent.consent_id] = not (
            consent.period_start is not None and consent.period_start > received_at
        )

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

    def consents_starting(self, until: datetime) -> list[Consent]:
        return sorted(
            (
                c
                for c in self.consents.values()
                if not self.started[c.consent_id]
                and c.status == "active"
                and c.period_start is not None
                and c.period_start <= until
            ),
            key=lambda c: (c.period_start, c.consent_id),
        )

    def mark_started(self, consent_id: str) -> None:
        self.started[consent_id] = True

    def releases_of(self, referral_id: str) -> dict[str, ReleaseState]:
        return {r: s for (ref, r), s in self.releases.items() if ref == referral_id}

    def record_release(self, release: ReleaseState) -> None:
        key = (release.referral_id, release.recipient_id)
        assert key not in self.releases, "the store refuses a second release (primary key)"
        self.releases[key] = release

    def set_fingerprint(self, referral_id: str, recipient_id: str, fingerprint: str) -> None:
        key = (referral_id, recipient_id)
        self.releases[key] = self.releases[key].model_copy(update={"fingerprint": fingerprint})

    def mark_revoked(self, referral_id: str, recipient_id: str, at: datetime) -> None:
        key = (referral_id, recipient_id)
        self.releases[key] = self.releases[key].model_copy(update={"revoked_at": at})

    def add_status(self, registration_id: str, status: str, at: datetime, by: str) -> None:
        self.timeline.append((registration_id, str(status), by))
