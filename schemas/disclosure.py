"""What one recipient may receive about one referral: the result of minimisation.

The consent gate decides it (`services.domain.minimise`); the format adapters only render
it. A field that is None here is left out of the message.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.referral import PostalAddress

RecipientKind = Literal["welfare", "municipality"]


class DisclosedReferrer(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    agb: str
    practice_id: str
    practice_name: str
    practice_agb: str | None = None


class Disclosure(BaseModel):
    model_config = ConfigDict(frozen=True)

    recipient_kind: RecipientKind
    referral_id: str
    authored_on: datetime | None = None
    bsn: str | None = None
    name: str
    given_names: tuple[str, ...] = ()
    family_prefix: str | None = None
    family_name: str | None = None
    birth_date: date | None = None
    gender: str | None = None
    phone: str | None = None
    email: str | None = None
    address: PostalAddress | None = None
    reason: str | None = None
    referrer: DisclosedReferrer

    def fingerprint(self) -> str:
        """Changes when anything the recipient receives changes (then: referral-updated)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()
