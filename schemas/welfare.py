"""Welfare intake JSON (CONTRACT §4): what a welfare organisation receives on release.

Minimised by construction: there is no field for a BSN, a diagnosis, medication or notes.
The JSON Schema of `WelfareIntake` is exported to `schemas/generated/`.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class IntakeAddress(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    street: str | None = None
    house_number: str | None = None
    postal_code: str | None = Field(default=None, examples=["7901 AB"])
    city: str | None = None
    municipality: str | None = Field(
        default=None, pattern=r"^[0-9]{4}$", description="CBS code", examples=["0118"]
    )


class IntakeClient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    birth_date: date | None = None
    phone: str | None = Field(default=None, description="left out unless consented")
    email: str | None = Field(default=None, description="left out unless consented")
    address: IntakeAddress | None = Field(default=None, description="left out unless consented")


class IntakeReferrer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    agb: str = Field(pattern=r"^[0-9]{8}$")
    practice: str


class WelfareIntake(BaseModel):
    """`nl.schakel.referral-released.v1` on `welfare.<participant-id>.referrals`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="Schakel welfare intake",
        json_schema_extra={
            "$id": "urn:schakel:schema:welfare-intake:v1",
            "description": "A referral released to a welfare organisation after consent "
            "(ce_type nl.schakel.referral-released.v1). Never carries a BSN, "
            "diagnoses, medication or notes.",
        },
    )

    referral_id: str
    registration_id: str
    released_at: datetime = Field(description="RFC 3339, UTC")
    client: IntakeClient
    reason: str = Field(max_length=200, description="one line")
    referrer: IntakeReferrer
    contact_within_days: int = Field(ge=1)
    consent_id: str
