"""What the domain needs from a store. Storage adapters meet this structurally."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from schemas.consent import Consent
from schemas.registration import ReferralReleased, StoredReferral


class GateStore(Protocol):
    """One transaction's view of the consent gate's state."""

    def referral(self, referral_id: str) -> StoredReferral | None: ...

    def put_referral(self, stored: StoredReferral) -> None: ...

    def referrals_of_patient(self, bsn: str) -> list[StoredReferral]: ...

    def consent(self, consent_id: str) -> Consent | None: ...

    def put_consent(self, consent: Consent, received_at: datetime) -> None: ...

    def consents_for(self, referral_id: str, bsn: str) -> list[Consent]: ...

    def released_to(self, referral_id: str) -> set[str]: ...

    def record_release(self, release: ReferralReleased) -> None: ...

    def add_status(self, registration_id: str, status: str, at: datetime, by: str) -> None: ...
