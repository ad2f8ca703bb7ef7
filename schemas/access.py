"""Who is asking, and what they may see (CONTRACT §9)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ViewerKind = Literal["operator", "gp-practice", "welfare", "municipality"]


@dataclass(frozen=True)
class Viewer:
    kind: ViewerKind
    participant_id: str | None = None  # None for the operator

    @property
    def name(self) -> str:
        return self.participant_id or "operator"


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
