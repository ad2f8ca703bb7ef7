"""What the domain needs from a store. Storage adapters meet this structurally."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from schemas.consent import Consent
from schemas.feedback import WelfareFeedback
from schemas.registration import RegistrationState, ReleaseState, StoredReferral


class GateStore(Protocol):
    """One transaction's view of the consent gate's state."""

    def referral(self, referral_id: str) -> StoredReferral | None: ...

    def put_referral(self, stored: StoredReferral) -> None: ...

    def referrals_of_patient(self, bsn: str) -> list[StoredReferral]: ...

    def consent(self, consent_id: str) -> Consent | None: ...

    def put_consent(self, consent: Consent, received_at: datetime) -> None:
        """Insert or replace. A consent whose period starts after `received_at` is kept
        as 'starting', for `consents_starting`; an active one with a period end as
        'ending', for `consents_ending`."""

    def consents_for(self, referral_id: str, bsn: str) -> list[Consent]:
        """Every consent naming this referral, and every patient-level consent or objection
        of this patient (naming no referral), whatever their status."""

    def consents_starting(self, until: datetime) -> list[Consent]:
        """Active consents whose period has started by `until` and that have not been
        handled as started yet."""

    def mark_started(self, consent_id: str) -> None: ...

    def consents_ending(self, until: datetime) -> list[Consent]:
        """Active consents whose period ended before `until` (their `period_end` is past)
        and that have not been handled as ended yet."""

    def mark_ended(self, consent_id: str) -> None: ...

    def releases_of(self, referral_id: str) -> dict[str, ReleaseState]: ...

    def record_release(self, release: ReleaseState) -> None: ...

    def set_fingerprint(self, referral_id: str, recipient_id: str, fingerprint: str) -> None: ...

    def mark_revoked(self, referral_id: str, recipient_id: str, at: datetime) -> None: ...

    def add_status(self, registration_id: str, status: str, at: datetime, by: str) -> None: ...

    def registration_released_before(
        self, registration_id: str, recipient_id: str, referral_id: str
    ) -> bool:
        """Did another referral of this registration already reach this recipient?"""

    def live_releases(self, registration_id: str, recipient_id: str) -> int:
        """Releases of this registration to this recipient that are not revoked."""

    def first_live_release(self, registration_id: str, recipient_id: str) -> ReleaseState | None:
        """The earliest release of this registration to this recipient not revoked (by
        time, then referral id), or None."""

    # --- registrations (one per patient x welfare organisation trajectory) -------------
    def open_registration(self, bsn: str, recipient_id: str) -> str | None: ...

    def registration(self, registration_id: str) -> RegistrationState | None: ...

    def set_contact_due(self, registration_id: str, due_at: datetime) -> None:
        """Sets the contact term once (the first release of the registration)."""

    def mark_contact_made(self, registration_id: str, at: datetime) -> None: ...

    def close_registration(
        self, registration_id: str, at: datetime, retain_until: datetime
    ) -> None: ...

    def registrations_due(self, until: datetime) -> list[RegistrationState]:
        """Open registrations past their contact term with no contact and no overdue yet."""

    def mark_overdue(self, registration_id: str, at: datetime) -> None: ...

    def add_feedback(
        self, message_id: str, feedback: WelfareFeedback, registration_id: str, at: datetime
    ) -> bool:
        """Keeps a feedback message; False when this very message was kept before."""
