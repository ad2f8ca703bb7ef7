"""The canonical consent: what the hub keeps of a Consent resource (CONTRACT §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.identifiers import Bsn, ParticipantId


class ReferralRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    system: str | None = None
    value: str


class Consent(BaseModel):
    model_config = ConfigDict(frozen=True)

    consent_id: str = Field(min_length=1, max_length=64)
    status: Literal["active", "inactive", "rejected"]
    patient_bsn: Bsn | None = Field(default=None, description="None: named by reference only")
    recipients: tuple[ParticipantId, ...] = Field(
        default=(), description="participant ids of the recipient organisations (role IRCP)"
    )
    referrals: tuple[ReferralRef, ...] = Field(
        default=(), description="empty: all referrals of the patient"
    )
    period_start: datetime | None = None
    period_end: datetime | None = None
    recorded_at: datetime | None = None

    @property
    def key(self) -> str:
        """Kafka key: the referral id when it names exactly one referral, else its own id."""
        return self.referrals[0].value if len(self.referrals) == 1 else self.consent_id
