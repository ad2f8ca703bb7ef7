"""What the audit trail records (NEN 7513, DOMAIN §5): who, which organisation, which client,
what, when, with what outcome, on which consent, seen by which source."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AuditAction = Literal[
    "release",
    "registration",
    "update",
    "revoke-notice",
    "feedback-forwarded",
    "overdue-notice",
    "read",
    "submit",
    "subject-access",
    "replay",
    "dlq-show",
    "dlq-reprocess",
    "outbox-requeue",
]
PSEUDONYM_SYSTEM = "urn:schakel:patient-pseudonym"


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: AuditAction
    recorded: datetime
    actor: str = Field(
        description="participant id, 'operator:<name>' (an operator command), 'operator' "
        "(the console's operator token), or 'schakel-hub'"
    )
    actor_role: str = Field(description="gp-practice | welfare | municipality | operator | hub")
    recipient: str | None = Field(default=None, description="the organisation that received data")
    referral_id: str | None = None
    referral_system: str | None = None
    registration_id: str | None = None
    patient: str | None = Field(
        default=None, description="keyed pseudonym of the BSN, never the BSN"
    )
    consent_id: str | None = None
    data: tuple[str, ...] = Field(default=(), description="the kinds of data disclosed")
    outcome: Literal["success", "refused", "not-found"] = "success"
    detail: str = ""


class AuditEntry(BaseModel):
    """One stored link of the chain."""

    model_config = ConfigDict(frozen=True)

    seq: int
    recorded: datetime
    action: str
    actor: str
    recipient: str | None
    referral_id: str | None
    registration_id: str | None
    patient: str | None
    consent_id: str | None
    canonical: str = Field(description="the AuditEvent JSON the hash covers")
    hash: str
    prev_hash: str
