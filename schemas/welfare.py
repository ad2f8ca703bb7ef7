"""Welfare intake JSON (CONTRACT §4): what a welfare organisation receives on release.

Minimised by construction: there is no field for a BSN, a diagnosis, medication or notes.
The JSON Schema of `WelfareIntake` is exported to `schemas/generated/`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def _left_out(schema: dict[str, Any]) -> None:
    """An optional field is left out when it has no value (the hub writes no nulls): its
    exported schema is its type's, with no null and no default."""
    any_of = schema.pop("anyOf", None)
    if any_of is not None:
        kept = [s for s in any_of if s.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    schema.pop("default", None)


def _optional(**kwargs: Any) -> Any:
    return Field(default=None, json_schema_extra=_left_out, **kwargs)


class IntakeAddress(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    street: str | None = _optional(min_length=1)
    house_number: str | None = _optional(min_length=1)
    postal_code: str | None = _optional(
        min_length=1, examples=["7901 AB"], description="a Dutch one written 1234 AB"
    )
    city: str | None = _optional(min_length=1)
    municipality: str | None = _optional(
        pattern=r"^[0-9]{4}$", description="CBS code", examples=["0118"]
    )


class IntakeClient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    birth_date: date | None = _optional()
    phone: str | None = _optional(min_length=1, description="left out unless consented")
    email: str | None = _optional(min_length=1, description="left out unless consented")
    address: IntakeAddress | None = _optional(description="left out unless consented")


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

    referral_id: str = Field(min_length=1)
    registration_id: str = Field(min_length=1)
    released_at: datetime = Field(description="RFC 3339, UTC")
    client: IntakeClient
    reason: str = Field(min_length=1, max_length=200, pattern=r"^[^\r\n]+$", description="one line")
    referrer: IntakeReferrer
    contact_within_days: int = Field(ge=1)
    consent_id: str = Field(min_length=1)
