"""State the hub keeps per referral and registration, and the events its rules produce."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.consent import DataClass
from schemas.disclosure import RecipientKind
from schemas.referral import Referral

RevokeReason = Literal["consent-withdrawn", "consent-expired"]
"""Why a recipient no longer has a covering consent: the consent that covered it was
withdrawn (or narrowed, or the patient objected), or its period ended."""


class RegistrationStatus(StrEnum):
    """The status timeline of a registration (CONTRACT §7)."""

    RECEIVED = "received"
    WAITING_FOR_CONSENT = "waiting-for-consent"
    RELEASED = "released"
    CONTACTED = "contacted"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    DECLINED = "declined"
    NOT_REACHED = "not-reached"
    REVOKED = "revoked"
    OVERDUE = "overdue"


class StoredReferral(BaseModel):
    """A referral the hub holds, with its routing result."""

    model_config = ConfigDict(frozen=True)

    referral: Referral
    recipient_id: str
    registration_id: str
    received_at: datetime
    trace: str | None = None
    """The W3C traceparent the referral first arrived with: what the hub sends about it
    without a traced cause (a timer, feedback without one) continues this trace."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReferralReceived(_Event):
    referral_id: str
    registration_id: str
    recipient_id: str
    at: datetime


class ReferralRedelivered(_Event):
    """The same referral arrived again with nothing new: no effect."""

    referral_id: str
    at: datetime


class ReferralAwaitingConsent(_Event):
    referral_id: str
    registration_id: str
    recipient_id: str
    at: datetime


class ConsentRecorded(_Event):
    consent_id: str
    status: str
    recipients: tuple[str, ...]
    at: datetime


class ReferralReleased(_Event):
    referral_id: str
    registration_id: str
    recipient_id: str
    recipient_kind: RecipientKind = "welfare"
    consent_id: str
    released_at: datetime
    classes: frozenset[DataClass] = frozenset()
    first_of_registration: bool = True
    """False when an earlier referral of the same registration already reached this
    recipient: it then arrives as `referral-updated`, never as a second intake."""


class ReferralUpdated(_Event):
    """A recipient's view of a released referral changed (re-sent referral, wider consent)."""

    referral_id: str
    registration_id: str
    recipient_id: str
    recipient_kind: RecipientKind = "welfare"
    consent_id: str
    updated_at: datetime
    classes: frozenset[DataClass] = frozenset()


class RegistrationState(BaseModel):
    """The registration as the rules see it: one per patient x welfare organisation
    trajectory (CONTRACT §7)."""

    model_config = ConfigDict(frozen=True)

    registration_id: str
    referral_id: str
    recipient_id: str
    status: str
    practice_id: str | None = None
    contact_due_at: datetime | None = None
    contact_made_at: datetime | None = None
    overdue_at: datetime | None = None
    closed_at: datetime | None = None

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


class FeedbackForwarded(_Event):
    referral_id: str
    registration_id: str
    organisation: str
    practice_id: str
    status: str
    at: datetime


class ContactOverdue(_Event):
    """No contact within the term: the GP is told, the organisation reminded (once)."""

    referral_id: str
    registration_id: str
    recipient_id: str
    practice_id: str
    due_at: datetime
    at: datetime


class ReferralRevoked(_Event):
    """No consent covers a recipient that already received the referral any more."""

    referral_id: str
    registration_id: str
    recipient_id: str
    recipient_kind: RecipientKind = "welfare"
    revoked_at: datetime
    cause: str
    reason: RevokeReason = "consent-withdrawn"


class ReleaseState(BaseModel):
    """What the store remembers of one release (referral x recipient)."""

    model_config = ConfigDict(frozen=True)

    referral_id: str
    recipient_id: str
    registration_id: str
    consent_id: str
    released_at: datetime
    fingerprint: str
    revoked_at: datetime | None = None


class MessageDeadLettered(_Event):
    """An inbound message the hub could not handle went to `dead-letter` (CONTRACT §6)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    detail: str


GateEvent = (
    ReferralReceived
    | ReferralRedelivered
    | ReferralAwaitingConsent
    | ConsentRecorded
    | ReferralReleased
)


class ReprocessIgnored(_Event):
    """A dead letter re-driven by `schakel dlq reprocess` arrived a second time."""

    topic: str
    partition: int
    offset: int
    reprocess_id: str


HubEvent = GateEvent | MessageDeadLettered | ReprocessIgnored
