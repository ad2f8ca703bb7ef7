"""Who is asking, and what they may see (CONTRACT §9)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ViewerKind = Literal["operator", "gp-practice", "welfare", "municipality"]

OPERATOR_ROLE = "operator"
# A person's login or e-mail address: what the audit trail records for an operator
# ("operator:" and the name fit the store's 40 characters for an actor).
OPERATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,30}")
OPERATOR_NAME_RULE = (
    "must name one person: 1 to 31 letters, digits or . _ @ + -, starting with a letter or digit"
)


def operator_actor(name: str | None) -> str:
    """The audit trail's actor for an operator named `name` ("operator:<name>", never a
    participant id: those hold no colon), or the role alone when nobody is named."""
    return f"{OPERATOR_ROLE}:{name}" if name else OPERATOR_ROLE


@dataclass(frozen=True)
class Viewer:
    kind: ViewerKind
    participant_id: str | None = None  # None for an operator
    person: str | None = None  # the operator's name, when its token is a person's own

    @property
    def name(self) -> str:
        return self.participant_id or operator_actor(self.person)


class TimelineItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: str
    at: datetime
    by: str


class RegistrationSummary(BaseModel):
    """One registration as a participant sees it in a list."""

    model_config = ConfigDict(frozen=True)

    registration_id: str
    referral_id: str
    status: str
    organisation: str = Field(description="the welfare organisation of the trajectory")
    practice: str | None = Field(default=None, description="the referring gp-practice")
    client_name: str | None = Field(
        default=None, description="personal data: every read is audited"
    )
    overdue: bool = Field(description="the contact term passed without contact")
    closed: bool
    created_at: datetime
    updated_at: datetime


class RegistrationDetail(RegistrationSummary):
    referral_ids: list[str]
    timeline: list[TimelineItem]


class DeadLetterSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str
    reason: str
    detail: str
    original_topic: str
    original_partition: int
    original_offset: int
    key: str | None
    at: datetime
