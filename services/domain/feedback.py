"""Feedback from a welfare organisation (CONTRACT §5, §7).

Accepted only from the organisation the referral was released to, while that release
stands. It moves the registration along its timeline (contacted, in-progress, completed,
declined, not-reached), meets the contact term when the organisation spoke with the
patient, closes the registration when the trajectory ends, and is forwarded to the
referring practice. A closed registration is never reopened; the same feedback delivered
twice counts once.
"""

from __future__ import annotations

from datetime import datetime

from schemas.errors import NotAuthorisedError
from schemas.feedback import CLOSING, CONTACT_MADE, WelfareFeedback
from schemas.ids import feedback_id
from schemas.registration import FeedbackForwarded, RegistrationStatus
from services.domain.gate import GatePolicy, GateResult, Output
from services.domain.ports import GateStore

_STATUS = {
    "contacted": RegistrationStatus.CONTACTED,
    "in-progress": RegistrationStatus.IN_PROGRESS,
    "completed": RegistrationStatus.COMPLETED,
    "declined": RegistrationStatus.DECLINED,
    "not-reached": RegistrationStatus.NOT_REACHED,
}


def message_id_of(feedback: WelfareFeedback) -> str:
    return feedback_id(
        feedback.referral_id,
        feedback.organisation,
        str(feedback.status),
        feedback.occurred_at.isoformat(),
    )


def on_feedback(
    store: GateStore, feedback: WelfareFeedback, at: datetime, policy: GatePolicy
) -> GateResult:
    result = GateResult()
    stored = store.referral(feedback.referral_id)
    release = store.releases_of(feedback.referral_id).get(feedback.organisation) if stored else None
    if stored is None or release is None or policy.kind_of(feedback.organisation) != "welfare":
        # The same answer for an unknown referral: existence does not leak to a sender.
        raise NotAuthorisedError("feedback from an organisation this referral was not released to")
    if release.revoked_at is not None:
        raise NotAuthorisedError(
            "no consent covers this organisation any more (withdrawn, or its period ended)"
        )
    if not store.add_feedback(message_id_of(feedback), feedback, release.registration_id, at):
        return result  # delivered before: forwarded before

    registration = store.registration(release.registration_id)
    if registration is not None and not registration.closed:
        store.add_status(
            registration.registration_id, _STATUS[str(feedback.status)], at, feedback.organisation
        )
        if feedback.status in CONTACT_MADE:
            store.mark_contact_made(registration.registration_id, feedback.occurred_at)
        if feedback.status in CLOSING:
            store.close_registration(registration.registration_id, at, at + policy.retention)
    event = FeedbackForwarded(
        referral_id=feedback.referral_id,
        registration_id=release.registration_id,
        organisation=feedback.organisation,
        practice_id=stored.referral.referrer.practice_id,
        status=str(feedback.status),
        at=at,
    )
    result.events.append(event)
    result.outputs.append(Output("feedback", event, feedback=feedback))
    return result
