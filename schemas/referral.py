"""The canonical referral: what the hub keeps of a referral-created Bundle.

It holds personal data (it is what the consent gate protects); `Bsn` masks its repr.
Nothing here is FHIR: the FHIR adapter translates into these models.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.identifiers import Agb, Bsn, CbsCode, ParticipantId


class PostalAddress(BaseModel):
    model_config = ConfigDict(frozen=True)

    street: str | None = None
    house_number: str | None = None
    postal_code: str | None = None
    city: str | None = None
    municipality: CbsCode | None = Field(default=None, description="CBS code, resolved")


class Client(BaseModel):
    """The patient, as far as the social domain may ever see them (plus the BSN)."""

    model_config = ConfigDict(frozen=True)

    bsn: Bsn
    name: str = Field(min_length=1)
    name_parts: tuple[str, ...] = Field(
        default=(), description="given names and family name parts, for log redaction"
    )
    given_names: tuple[str, ...] = ()
    family_prefix: str | None = Field(default=None, description="voorvoegsel, e.g. 'de'")
    family_name: str | None = Field(default=None, description="achternaam without voorvoegsel")
    birth_date: date | None = None
    gender: str | None = Field(default=None, description="FHIR AdministrativeGender")
    phone: str | None = None
    email: str | None = None
    address: PostalAddress | None = None


class Referrer(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    agb: Agb
    practice_id: ParticipantId
    practice_name: str
    practice_agb: Agb | None = None


class Referral(BaseModel):
    """A referral as the hub stores it, after validation and routing input resolution."""

    model_config = ConfigDict(frozen=True)

    referral_id: str = Field(min_length=1, max_length=64)
    identifier_system: str | None = None
    authored_on: datetime | None = None
    reason: str = Field(min_length=1, max_length=200, description="one line")
    client: Client
    referrer: Referrer
    performer_id: ParticipantId | None = Field(
        default=None, description="welfare participant named as performer, if any"
    )
