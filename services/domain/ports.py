"""What the domain needs from a store. Storage adapters meet this structurally."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from schemas.consent import Consent
from schemas.registration import ReleaseState, StoredReferral


class GateStore(Protocol):
    """One transaction's view of the consent gate's state."""

    def referral(self, referral_id: str) -> StoredReferral | None: ...

    def put_referral(self, stored: StoredReferral) -> None: ...

    def referrals_of_patient(self, bsn: str) -> list[StoredReferral]: ...

    def consent(self, consent_id: str) -> Consent | None: ...

    def put_consent(self, consent: Consent, received_at: datetime) -> None:
        """Insert or replace. A consent whose period starts after `received_at` is kept
        as 'starting', for `consents_starting`."""

    def consents_for(self, referral_id: str, bsn: str) -> list[Consent]:
        """Every consent naming this referral, and every patient-level consent or objection
        of this patient (naming no referral), whatever their status."""

    def consents_starting(self, until: datetime) -> list[Consent]:
        """Active consents whose period has started by `until` and that have not been
        handled as started yet."""

    def mark_started(self, consent_id: str) -> None: ...

    def releases_of(self, referral_id: str) -> dict[str, ReleaseState]: ...

    def record_release(self, release: ReleaseState) -> None: ...

    def set_fingerprint(self, referral_id: str, recipient_id: str, fingerprint: str) -> None: ...

    def mark_revoked(self, referral_id: str, recipient_id: str, at: datetime) -> None: ...

    def add_status(self, registration_id: str, status: str, at: datetime, by: str) -> None: ...
