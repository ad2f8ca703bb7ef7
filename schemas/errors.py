"""Errors that end in a dead letter.

Each error carries the dead-letter reason code of CONTRACT §6 and a message that
never contains personal data: messages name fields and rules, never values.
"""

from __future__ import annotations


class SchakelError(Exception):
    """Base of every error the hub turns into a dead letter."""

    reason = "invalid-input"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidJsonError(SchakelError):
    reason = "invalid-json"


class InvalidFhirError(SchakelError):
    """Not FHIR R4 at all, or a resource that breaks the FHIR structure rules."""

    reason = "invalid-fhir"


class InvalidReferralError(SchakelError):
    """Valid FHIR, but not a referral as CONTRACT §3 defines it."""

    reason = "invalid-referral"


class InvalidConsentError(SchakelError):
    """Valid FHIR, but not a consent the hub can apply (CONTRACT §3)."""

    reason = "invalid-consent"


class InvalidBsnError(SchakelError):
    reason = "invalid-bsn"


class InvalidAgbError(SchakelError):
    reason = "invalid-agb"


class UnknownParticipantError(SchakelError):
    reason = "unknown-participant"


class NoRecipientError(SchakelError):
    reason = "no-recipient"


class NotAuthorisedError(SchakelError):
    """The sender may not say this about that referral (CONTRACT §5)."""

    reason = "not-authorised"


class ReferralConflictError(SchakelError):
    """A referral id the hub already holds, sent again for another patient, by another
    practice or under another identifier system: never a re-send of the same referral."""

    reason = "referral-conflict"


class InvalidFeedbackError(SchakelError):
    reason = "invalid-feedback"


class TooLargeError(SchakelError):
    reason = "too-large"


class InternalError(SchakelError):
    """A bug met one message: dead-lettered so it cannot block its partition."""

    reason = "internal-error"


class StoreRejectedError(SchakelError):
    """The store refused one message's changes again and again while it answered for
    everything else (a constraint or data error): dead-lettered after bounded retries."""

    reason = "store-rejected"


DEAD_LETTER_REASONS = (
    "invalid-json",
    "invalid-fhir",
    "invalid-referral",
    "invalid-consent",
    "invalid-bsn",
    "invalid-agb",
    "unknown-participant",
    "no-recipient",
    "not-authorised",
    "referral-conflict",
    "invalid-feedback",
    "too-large",
    "invalid-output",
    "internal-error",
    "store-rejected",
)
"""Every `schakel-error-reason` the hub writes (exported in the AsyncAPI document; a test
holds it to the errors' own codes)."""


class ConfigurationError(Exception):
    """Bad settings or participants file: the hub refuses to start."""
