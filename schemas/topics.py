"""Topic, header and CloudEvents type names, declared once (CONTRACT §2, §6).

`SCHAKEL_TOPIC_PREFIX` is applied in exactly one place: `Topics`.
"""

from __future__ import annotations

from dataclasses import dataclass

# Fixed topics (logical names; the prefix is prepended by `Topics`).
REFERRAL_CREATED = "referral-created"
CONSENT_GRANTED = "consent-granted"
CONSENT_WITHDRAWN = "consent-withdrawn"
FEEDBACK_RETURNED = "feedback-returned"
DEAD_LETTER = "dead-letter"
AUDIT = "audit"

FIXED_TOPICS = (
    REFERRAL_CREATED,
    CONSENT_GRANTED,
    CONSENT_WITHDRAWN,
    FEEDBACK_RETURNED,
    DEAD_LETTER,
    AUDIT,
)


# The hub's own marker (an extension of CONTRACT §2; nobody else reads or writes it): one
# record written at start-up. The broker losing it means the broker lost its state.
HUB_EPOCH = "hub-epoch"


def welfare_referrals(participant_id: str) -> str:
    """Released referrals (and revoke/update notices) for one welfare organisation."""
    return f"welfare.{participant_id}.referrals"


def wmo_registrations(cbs_code: str) -> str:
    """iWmo-style registrations for one municipality."""
    return f"wmo.{cbs_code}.registrations"


def his_feedback(participant_id: str) -> str:
    """Feedback Bundles for one GP practice."""
    return f"his.{participant_id}.feedback"


@dataclass(frozen=True)
class Topics:
    """Topic names as they are on the broker: the prefix, exactly as given, then the name."""

    prefix: str = ""

    def name(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    @property
    def referral_created(self) -> str:
        return self.name(REFERRAL_CREATED)

    @property
    def consent_granted(self) -> str:
        return self.name(CONSENT_GRANTED)

    @property
    def consent_withdrawn(self) -> str:
        return self.name(CONSENT_WITHDRAWN)

    @property
    def feedback_returned(self) -> str:
        return self.name(FEEDBACK_RETURNED)

    @property
    def dead_letter(self) -> str:
        return self.name(DEAD_LETTER)

    @property
    def audit(self) -> str:
        return self.name(AUDIT)

    @property
    def hub_epoch(self) -> str:
        return self.name(HUB_EPOCH)

    def welfare_referrals(self, participant_id: str) -> str:
        return self.name(welfare_referrals(participant_id))

    def wmo_registrations(self, cbs_code: str) -> str:
        return self.name(wmo_registrations(cbs_code))

    def his_feedback(self, participant_id: str) -> str:
        return self.name(his_feedback(participant_id))

    def logical(self, name: str) -> str:
        """The logical name of a broker topic name (inverse of `name`)."""
        return name[len(self.prefix) :] if self.prefix and name.startswith(self.prefix) else name


# CloudEvents 1.0, Kafka protocol binding, binary content mode.
class Header:
    CE_SPECVERSION = "ce_specversion"
    CE_ID = "ce_id"
    CE_SOURCE = "ce_source"
    CE_TYPE = "ce_type"
    CE_TIME = "ce_time"
    CE_SUBJECT = "ce_subject"
    CONTENT_TYPE = "content-type"
    TRACEPARENT = "traceparent"
    # Dead letters (CONTRACT §6); values are UTF-8 strings.
    ERROR_REASON = "schakel-error-reason"
    ERROR_DETAIL = "schakel-error-detail"
    ORIGINAL_TOPIC = "schakel-original-topic"
    ORIGINAL_PARTITION = "schakel-original-partition"
    ORIGINAL_OFFSET = "schakel-original-offset"
    # Re-driven dead letters (`schakel dlq reprocess`): lineage to the original record.
    REPROCESS_ID = "schakel-reprocess-id"
    REPROCESS_OF = "schakel-reprocess-of"
    DEAD_LETTER_ID = "schakel-dead-letter-id"


CE_SPECVERSION = "1.0"
CE_SOURCE = "urn:schakel:hub"


def ce_type(event: str) -> str:
    return f"nl.schakel.{event}.v1"


CE_REFERRAL_RELEASED = ce_type("referral-released")
CE_REFERRAL_REVOKED = ce_type("referral-revoked")
CE_REFERRAL_UPDATED = ce_type("referral-updated")
CE_REFERRAL_CREATED = ce_type("referral-created")
CE_CONSENT_GRANTED = ce_type("consent-granted")
CE_CONSENT_WITHDRAWN = ce_type("consent-withdrawn")
CE_FEEDBACK_RETURNED = ce_type("feedback-returned")
CE_FEEDBACK_FORWARDED = ce_type("feedback-forwarded")
CE_CONTACT_OVERDUE = ce_type("contact-overdue")
CE_CONTACT_REMINDER = ce_type("contact-reminder")
CE_HUB_EPOCH = ce_type("hub-epoch")

INBOUND_CE_TYPES = {
    REFERRAL_CREATED: CE_REFERRAL_CREATED,
    CONSENT_GRANTED: CE_CONSENT_GRANTED,
    CONSENT_WITHDRAWN: CE_CONSENT_WITHDRAWN,
    FEEDBACK_RETURNED: CE_FEEDBACK_RETURNED,
}
