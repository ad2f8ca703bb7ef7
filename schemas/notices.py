"""The small JSON notices the hub sends besides intakes and FHIR (CONTRACT §4, README):
ids and dates only, nothing personal. Described here for the AsyncAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Notice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    referral_id: str
    registration_id: str


class ReferralRevokedNotice(_Notice):
    """`nl.schakel.referral-revoked.v1`, on the welfare and the municipal topic."""

    model_config = ConfigDict(title="ReferralRevokedNotice")

    revoked_at: str = Field(description="RFC 3339, UTC")
    reason: Literal["consent-withdrawn", "consent-expired"] = Field(
        description="consent-withdrawn: the consent was withdrawn or narrowed, or the patient "
        "objected; consent-expired: its period ended (an extension of CONTRACT §4)"
    )


class ContactReminder(_Notice):
    """`nl.schakel.contact-reminder.v1` to the welfare organisation: its contact term passed."""

    model_config = ConfigDict(title="ContactReminder")

    due_at: str = Field(description="RFC 3339, UTC: the end of the contact term")
    reason: Literal["contact-overdue"]
