"""Welfare feedback JSON (CONTRACT §5): what a welfare organisation returns about a referral.

Its JSON Schema is exported to `schemas/generated/welfare-feedback.schema.json`.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.identifiers import ParticipantId

SUMMARY_MAX = 280
# Anything that looks like a BSN: nine digits, also written with dots, spaces or dashes.
_BSN_LIKE = re.compile(r"(?<![0-9])[0-9](?:[ .\-]?[0-9]){8}(?![0-9])")


class FeedbackStatus(StrEnum):
    CONTACTED = "contacted"
    NOT_REACHED = "not-reached"
    DECLINED = "declined"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


# Statuses that mean the organisation spoke with the patient: the contact term is met.
CONTACT_MADE = frozenset(
    {
        FeedbackStatus.CONTACTED,
        FeedbackStatus.IN_PROGRESS,
        FeedbackStatus.COMPLETED,
        FeedbackStatus.DECLINED,
    }
)
# Statuses that end the trajectory: the registration is closed.
CLOSING = frozenset({FeedbackStatus.COMPLETED, FeedbackStatus.DECLINED})


class WelfareFeedback(BaseModel):
    """`feedback-returned`, written by a welfare participant, keyed by referral id."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="Schakel welfare feedback",
        json_schema_extra={
            "$id": "urn:schakel:schema:welfare-feedback:v1",
            "description": "Feedback from the welfare organisation a referral was released to. "
            "Forwarded to the referring GP as a FHIR Task and Communication.",
        },
    )

    referral_id: str = Field(min_length=1, max_length=64)
    organisation: ParticipantId = Field(description="the sender's participant id")
    status: FeedbackStatus
    occurred_at: AwareDatetime = Field(description="RFC 3339 with a time zone")
    summary: str = Field(
        default="",
        max_length=SUMMARY_MAX,
        description="at most 280 characters; no diagnoses, no BSN",
    )

    @field_validator("summary")
    @classmethod
    def _no_bsn(cls, value: str) -> str:
        if _BSN_LIKE.search(value):
            raise ValueError("the summary contains a number that looks like a BSN")
        return value
