"""Welfare feedback JSON (CONTRACT §5): what a welfare organisation returns about a referral.

Its JSON Schema is exported to `schemas/generated/welfare-feedback.schema.json`.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.identifiers import ParticipantId, bsn_valid

SUMMARY_MAX = 280
# Nine digits, also written with dots, spaces or dashes: a BSN when they pass the 11-proef
# (a date and a time such as "1-03-2027 10:00" can make nine digits too).
_DIGIT_RUN = re.compile(r"[0-9]+(?:[ .\-][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
# RFC 3339 section 5.6 date-time (second 60 is a leap second); a time zone is required.
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
_RFC3339 = re.compile(RFC3339.removesuffix("$") + r"\Z")


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
    occurred_at: AwareDatetime = Field(
        description="RFC 3339 with a time zone", json_schema_extra={"pattern": RFC3339}
    )
    summary: str = Field(
        default="",
        max_length=SUMMARY_MAX,
        description="at most 280 characters; no diagnoses, no BSN",
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        """Only RFC 3339 text (pydantic alone also reads Unix seconds, as a number or in a
        string, and a space for the T). A leap second is read as the last microsecond of
        its minute: Python's datetime has no second 60."""
        if isinstance(value, datetime):  # built in code, not read from JSON
            return value
        if not isinstance(value, str) or not _RFC3339.match(value):
            raise ValueError("must be an RFC 3339 date-time with a time zone")
        if value[17:19] == "60":
            rest = value[19:].lstrip(".0123456789")
            value = f"{value[:17]}59.999999{rest}"
        return value

    @field_validator("summary")
    @classmethod
    def _no_bsn(cls, value: str) -> str:
        if _holds_a_bsn(value):
            raise ValueError("the summary contains a number that looks like a BSN")
        return value


def _holds_a_bsn(text: str) -> bool:
    """Whether whole digit groups of a number in `text` (groups joined by single spaces,
    dots or dashes) make nine digits that pass the 11-proef, wherever they stand in it:
    "kamer 100 123 456 782" holds one; the date and time "1-03-2027 10:00" does not.

    Wider on purpose than the log redaction's rule (`adapters.redaction`), which masks a
    grouped BSN only where no group beside it continues it, so that it never cuts a phone
    number or an id apart: a summary is refused, not masked (dead-lettered
    `invalid-feedback`, for its sender to write again), so here any nine digits of whole
    groups count."""
    for run in _DIGIT_RUN.finditer(text):
        groups = _GROUP.findall(run.group(0))
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) >= 9:
                    break
            if len(digits) == 9 and bsn_valid(digits):
                return True
    return False
