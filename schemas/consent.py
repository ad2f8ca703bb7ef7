"""The canonical consent: what the hub keeps of a Consent resource (CONTRACT §3, DOMAIN §5).

Representation chosen for what the patient agreed to share (documented in README and
`schemas/consent-representation.md`): the top-level `provision.class` lists data classes
from the CodeSystem `urn:schakel:consent-data`. Absent, a permit covers the referral with
its contact data. A `provision.type = deny` Consent without actors or data is the
patient's objection to any exchange ("geen uitwisseling").
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.identifiers import Bsn, ParticipantId

DATA_CLASS_SYSTEM = "urn:schakel:consent-data"


class DataClass(StrEnum):
    """What a recipient may receive about a referral."""

    REFERRAL = "referral"
    """The referral itself: name, birth date, referrer; for a welfare organisation also the
    one-line reason (the referral is about it). Nothing is released without this class."""
    CONTACT_PHONE = "contact-phone"
    CONTACT_EMAIL = "contact-email"
    CONTACT_ADDRESS = "contact-address"
    REASON = "reason"
    """The one-line reason for a recipient whose format does not need it: the municipality
    gets it only with this class (iWmo OP191: no free text without consent)."""


CONTACT_CLASSES = frozenset(
    {DataClass.CONTACT_PHONE, DataClass.CONTACT_EMAIL, DataClass.CONTACT_ADDRESS}
)
CONTACT_SHORTHAND = "contact"
DEFAULT_CLASSES = frozenset({DataClass.REFERRAL, *CONTACT_CLASSES})


class ReferralRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    system: str | None = None
    value: str


class Consent(BaseModel):
    model_config = ConfigDict(frozen=True)

    consent_id: str = Field(min_length=1, max_length=64)
    status: Literal["active", "inactive", "rejected"]
    kind: Literal["permit", "objection"] = Field(
        default="permit", description="objection: the patient refuses every exchange"
    )
    patient_bsn: Bsn | None = Field(default=None, description="None: named by reference only")
    recipients: tuple[ParticipantId, ...] = Field(
        default=(), description="participant ids of the recipient organisations (role IRCP)"
    )
    referrals: tuple[ReferralRef, ...] = Field(
        default=(), description="empty: all referrals of the patient"
    )
    classes: frozenset[DataClass] = Field(default=DEFAULT_CLASSES)
    period_start: datetime | None = None
    period_end: datetime | None = None
    recorded_at: datetime | None = None

    @property
    def key(self) -> str:
        """Kafka key: the referral id when it names exactly one referral, else its own id."""
        return self.referrals[0].value if len(self.referrals) == 1 else self.consent_id

    @property
    def is_objection(self) -> bool:
        return self.kind == "objection"
