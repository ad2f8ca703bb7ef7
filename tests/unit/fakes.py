"""An in-memory GateStore: the domain port, implemented for unit and property tests
(no Mock()). It must behave like the SQL store; the property test runs both."""

from __future__ import annotations

from datetime import datetime

from schemas.consent import Consent
from schemas.feedback import WelfareFeedback
from schemas.registration import RegistrationState, ReleaseState, StoredReferral


class MemoryGateStore:
    def __init__(self) -> None:
        self.referrals: dict[str, StoredReferral] = {}
        self.consents: dict[str, Consent] = {}
        self.started: dict[str, bool] = {}
        self.ending: set[str] = set()
        self.releases: dict[tuple[str, str], ReleaseState] = {}
        self.timeline: list[tuple[str, str, str]] = []
        self.registrations: dict[str, RegistrationState] = {}
        self.feedback: dict[str, WelfareFeedback] = {}

    def referral(self, referral_id: str) -> StoredReferral | None:
        return self.referrals.get(referral_id)

    def put_referral(self, stored: StoredReferral) -> None:
        self.referrals[stored.referral.referral_id] = stored
        self.registrations.setdefault(
            stored.registration_id,
            RegistrationState(
                registration_id=stored.registration_id,
                referral_id=stored.referral.referral_id,
                recipient_id=stored.recipient_id,
                status="received",
                practice_id=stored.referral.referrer.practice_id,
            ),
        )
        self._patients = getattr(self, "_patients", {})
        self._patients.setdefault(stored.registration_id, str(stored.referral.client.bsn))

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
        if consent.status == "active" and consent.period_end is not None:
            self.ending.add(consent.consent_id)
        else:
            self.ending.discard(consent.consent_id)

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

    def consents_ending(self, until: datetime) -> list[Consent]:
        ending = (self.consents[i] for i in self.ending)
        return sorted(
            (c for c in ending if c.period_end is not None and c.period_end < until),
            key=lambda c: (c.period_end, c.consent_id),
        )

    def mark_ended(self, consent_id: str) -> None:
        self.ending.discard(consent_id)

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
        self._update(registration_id, status=str(status))

    def _update(self, registration_id: str, **values: object) -> None:
        self.registrations[registration_id] = self.registrations[registration_id].model_copy(
            update=values
        )

    def registration_released_before(
        self, registration_id: str, recipient_id: str, referral_id: str
    ) -> bool:
        return any(
            s.registration_id == registration_id and r == recipient_id and ref != referral_id
            for (ref, r), s in self.releases.items()
        )

    def live_releases(self, registration_id: str, recipient_id: str) -> int:
        return sum(
            1
            for (_, r), s in self.releases.items()
            if s.registration_id == registration_id and r == recipient_id and s.revoked_at is None
        )

    def first_live_release(self, registration_id: str, recipient_id: str) -> ReleaseState | None:
        live = [
            s
            for (_, r), s in self.releases.items()
            if s.registration_id == registration_id and r == recipient_id and s.revoked_at is None
        ]
        return min(live, key=lambda s: (s.released_at, s.referral_id), default=None)

    def open_registration(self, bsn: str, recipient_id: str) -> str | None:
        for registration_id, state in self.registrations.items():
            if (
                state.recipient_id == recipient_id
                and not state.closed
                and self._patients[registration_id] == bsn
            ):
                return registration_id
        return None

    def registration(self, registration_id: str) -> RegistrationState | None:
        return self.registrations.get(registration_id)

    def set_contact_due(self, registration_id: str, due_at: datetime) -> None:
        if self.registrations[registration_id].contact_due_at is None:
            self._update(registration_id, contact_due_at=due_at)

    def mark_contact_made(self, registration_id: str, at: datetime) -> None:
        if self.registrations[registration_id].contact_made_at is None:
            self._update(registration_id, contact_made_at=at)

    def close_registration(
        self, registration_id: str, at: datetime, retain_until: datetime
    ) -> None:
        if self.registrations[registration_id].closed_at is None:
            self._update(registration_id, closed_at=at)

    def registrations_due(self, until: datetime) -> list[RegistrationState]:
        return sorted(
            (
                s
                for s in self.registrations.values()
                if s.contact_due_at is not None
                and s.contact_due_at <= until
                and s.contact_made_at is None
                and s.overdue_at is None
                and not s.closed
            ),
            key=lambda s: (s.contact_due_at, s.registration_id),
        )

    def mark_overdue(self, registration_id: str, at: datetime) -> None:
        self._update(registration_id, overdue_at=at)

    def add_feedback(
        self, message_id: str, feedback: WelfareFeedback, registration_id: str, at: datetime
    ) -> bool:
        if message_id in self.feedback:
            return False
        self.feedback[message_id] = feedback
        return True
