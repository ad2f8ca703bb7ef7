"""Rendering the rules' outputs into outbox messages, in the same transaction.
Shared by every service whose rules produce outputs (intake, consent, feedback, timers)."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson

from adapters.broker.cloudevents import ce_headers, continue_trace, rfc3339, valid_traceparent
from adapters.fhir.to_fhir import feedback_bundle, overdue_bundle
from adapters.municipal.iwmo import identificatie, iwmo_from_disclosure
from adapters.storage.store import Tx
from adapters.welfare.intake import intake_from_disclosure, intake_json, revoked_json
from schemas.audit import AuditRecord
from schemas.identifiers import AGB_SYSTEM
from schemas.ids import message_id, overdue_id, release_id
from schemas.messages import InboundRecord, OutboundMessage
from schemas.participants import Participant
from schemas.registration import (
    ContactOverdue,
    FeedbackForwarded,
    ReferralReleased,
    ReferralRevoked,
    ReferralUpdated,
)
from schemas.topics import (
    CE_CONTACT_OVERDUE,
    CE_CONTACT_REMINDER,
    CE_FEEDBACK_FORWARDED,
    CE_REFERRAL_RELEASED,
    CE_REFERRAL_REVOKED,
    CE_REFERRAL_UPDATED,
    Header,
)
from services.audit_log import append, pseudonym
from services.domain.feedback import message_id_of
from services.domain.gate import GatePolicy, GateResult, Output
from services.runtime import Hub

XML = "application/xml"
JSON = "application/json"
FHIR_JSON = "application/fhir+json"


def gate_policy(hub: Hub) -> GatePolicy:
    return GatePolicy(
        municipalities=frozenset(p.id for p in hub.participants.of_kind("municipality")),
        contact_days={p.id: p.contact_within_days for p in hub.participants.of_kind("welfare")},
        retention=timedelta(days=hub.settings.retention_days),
    )


def _message(
    ce_id: str,
    ce_type: str,
    topic: str,
    key: str,
    body: bytes,
    at: datetime,
    traceparent: str,
    content_type: str,
) -> OutboundMessage:
    return OutboundMessage(
        message_id=ce_id,
        topic=topic,
        key=key.encode(),
        value=body,
        headers=ce_headers(
            ce_id=ce_id,
            ce_type=ce_type,
            time=at,
            traceparent=traceparent,
            subject=key,
            content_type=content_type,
        ),
    )


def _recipient_topic(hub: Hub, recipient: Participant) -> str:
    if recipient.kind == "municipality":
        return hub.topics.wmo_registrations(recipient.cbs_code or "")
    return hub.topics.welfare_referrals(recipient.id)


def disclosure_topics(hub: Hub) -> dict[str, str]:
    """Each topic that carries releases and updates (personal data) -> its recipient's id."""
    return {
        _recipient_topic(hub, p): p.id
        for p in hub.participants
        if p.kind == "welfare" or (p.kind == "municipality" and p.cbs_code)
    }


def _owner(participant: Participant) -> tuple[str, str, str]:
    ident = participant.identifiers[0]
    return ident.system, ident.value, participant.name


def _agb(hub: Hub, practice_id: str) -> str:
    practice = hub.participants.by_id[practice_id]
    return next(i.value for i in practice.identifiers if i.system == AGB_SYSTEM)


def _disclosure_message(hub: Hub, tx: Tx, output: Output, traceparent: str) -> OutboundMessage:
    event = output.event
    assert isinstance(event, ReferralReleased | ReferralUpdated)
    assert output.disclosure is not None
    recipient = hub.participants.by_id[event.recipient_id]
    first = isinstance(event, ReferralReleased) and event.first_of_registration
    at = event.released_at if isinstance(event, ReferralReleased) else event.updated_at
    if isinstance(event, ReferralReleased):
        ce_id = release_id(event.referral_id, event.recipient_id)  # once: never after a revoke
    else:
        # A release can be updated to the same content more than once (a wider consent
        # granted, withdrawn, granted again): each update is a message of its own. The
        # counter is part of this transaction, so a re-read of the same input, after a
        # rollback, yields the same id again.
        ce_id = message_id(
            "updated",
            event.referral_id,
            event.recipient_id,
            output.disclosure.fingerprint(),
            str(tx.next_number("referral-updated")),
        )
    # Not the first referral of this registration to reach the organisation: an update of
    # the registration it has, never a second intake.
    ce_type = CE_REFERRAL_RELEASED if first else CE_REFERRAL_UPDATED
    if recipient.kind == "municipality":
        stored = tx.referral(event.referral_id)
        welfare = hub.participants.get(stored.recipient_id) if stored else None
        body = iwmo_from_disclosure(
            output.disclosure,
            identificatie=identificatie(tx.next_number("iwmo-identificatie")),
            ontvanger=recipient.cbs_code or "",
            registration_id=event.registration_id,
            welfare_id=welfare.id if welfare else "onbekend",
            welfare_name=welfare.name if welfare else "onbekend",
            sent_at=at,
        )
        content_type = XML
    else:
        body = intake_json(
            intake_from_disclosure(
                output.disclosure,
                registration_id=event.registration_id,
                consent_id=event.consent_id,
                released_at=at,
                contact_within_days=recipient.contact_within_days,
            )
        )
        content_type = JSON
    return _message(
        ce_id,
        ce_type,
        _recipient_topic(hub, recipient),
        event.referral_id,
        body,
        at,
        traceparent,
        content_type,
    )


def _render(hub: Hub, tx: Tx, output: Output, traceparent: str) -> list[OutboundMessage]:
    event = output.event
    if isinstance(event, ReferralRevoked):
        recipient = hub.participants.by_id[event.recipient_id]
        body = revoked_json(
            referral_id=event.referral_id,
            registration_id=event.registration_id,
            revoked_at=event.revoked_at,
            reason=event.reason,
        )
        ce_id = message_id("revoked", event.referral_id, event.recipient_id)
        return [
            _message(
                ce_id,
                CE_REFERRAL_REVOKED,
                _recipient_topic(hub, recipient),
                event.referral_id,
                body,
                event.revoked_at,
                traceparent,
                JSON,
            )
        ]
    if isinstance(event, FeedbackForwarded):
        assert output.feedback is not None
        stored = tx.referral(event.referral_id)
        system, value, name = _owner(hub.participants.by_id[event.organisation])
        body = feedback_bundle(
            output.feedback,
            registration_id=event.registration_id,
            referral_system=stored.referral.identifier_system if stored else None,
            practice_agb=_agb(hub, event.practice_id),
            owner_system=system,
            owner_value=value,
            owner_name=name,
            at=event.at,
        )
        return [
            _message(
                message_id_of(output.feedback),
                CE_FEEDBACK_FORWARDED,
                hub.topics.his_feedback(event.practice_id),
                event.referral_id,
                body,
                event.at,
                traceparent,
                FHIR_JSON,
            )
        ]
    if isinstance(event, ContactOverdue):
        stored = tx.referral(event.referral_id)
        welfare = hub.participants.by_id[event.recipient_id]
        system, value, name = _owner(welfare)
        notice = overdue_bundle(
            registration_id=event.registration_id,
            referral_system=stored.referral.identifier_system if stored else None,
            referral_id=event.referral_id,
            practice_agb=_agb(hub, event.practice_id),
            owner_system=system,
            owner_value=value,
            owner_name=name,
            due_at=event.due_at,
            at=event.at,
        )
        reminder = orjson.dumps(
            {
                "referral_id": event.referral_id,
                "registration_id": event.registration_id,
                "due_at": rfc3339(event.due_at),
                "reason": "contact-overdue",
            }
        )
        return [
            _message(
                overdue_id(event.registration_id, "gp"),
                CE_CONTACT_OVERDUE,
                hub.topics.his_feedback(event.practice_id),
                event.referral_id,
                notice,
                event.at,
                traceparent,
                FHIR_JSON,
            ),
            _message(
                overdue_id(event.registration_id, "welfare"),
                CE_CONTACT_REMINDER,
                hub.topics.welfare_referrals(welfare.id),
                event.referral_id,
                reminder,
                event.at,
                traceparent,
                JSON,
            ),
        ]
    return [_disclosure_message(hub, tx, output, traceparent)]


def _audit_record(hub: Hub, tx: Tx, output: Output) -> AuditRecord:
    """What the trail says about one output: who received what about whom, on which consent."""
    event = output.event
    stored = tx.referral(event.referral_id)
    bsn = str(stored.referral.client.bsn) if stored else None
    system = stored.referral.identifier_system if stored else None
    common = {
        "actor": "schakel-hub",
        "actor_role": "hub",
        "referral_id": event.referral_id,
        "referral_system": system,
        "registration_id": event.registration_id,
        "patient": pseudonym(tx, bsn),
    }
    if isinstance(event, ReferralReleased | ReferralUpdated):
        kind = hub.participants.by_id[event.recipient_id].kind
        action = (
            ("registration" if kind == "municipality" else "release")
            if isinstance(event, ReferralReleased)
            else "update"
        )
        at = event.released_at if isinstance(event, ReferralReleased) else event.updated_at
        data = tuple(sorted(str(c) for c in event.classes)) + (
            ("bsn",) if kind == "municipality" else ()
        )
        return AuditRecord(
            action=action,
            recorded=at,
            recipient=event.recipient_id,
            consent_id=event.consent_id,
            data=data,
            **common,
        )
    if isinstance(event, ReferralRevoked):
        return AuditRecord(
            action="revoke-notice",
            recorded=event.revoked_at,
            recipient=event.recipient_id,
            consent_id=event.cause,
            data=("ids",),
            # a withdrawal's entries as they always were; an expiry says so
            detail=event.reason if event.reason != "consent-withdrawn" else "",
            **common,
        )
    if isinstance(event, FeedbackForwarded):
        release = tx.releases_of(event.referral_id).get(event.organisation)
        return AuditRecord(
            action="feedback-forwarded",
            recorded=event.at,
            recipient=event.practice_id,
            consent_id=release.consent_id if release else None,  # what the trajectory is on
            data=("feedback-status", "feedback-summary"),
            detail=f"from {event.organisation}",
            **common,
        )
    assert isinstance(event, ContactOverdue)
    release = tx.releases_of(event.referral_id).get(event.recipient_id)
    return AuditRecord(
        action="overdue-notice",
        recorded=event.at,
        recipient=event.practice_id,
        consent_id=release.consent_id if release else None,
        data=("ids",),
        detail=f"also reminded {event.recipient_id}",
        **common,
    )


def _referral_trace(tx: Tx, referral_id: str) -> str:
    stored = tx.referral(referral_id)
    return continue_trace(stored.trace if stored is not None else None)


def outputs_to_outbox(hub: Hub, tx: Tx, result: GateResult, cause: InboundRecord | None) -> None:
    """Every message the rules decided on, each with its audit entry. The trace continues
    from the record that caused it (the one that completed a referral+consent pair, the
    withdrawal, the feedback). Without a traced cause (a timer: a consent's period began or ended,
    a contact term passed; a message without a valid traceparent) it continues the trace
    the referral arrived with, so one referral can be followed by its trace id."""
    if not result.outputs:
        return
    inbound = cause.header(Header.TRACEPARENT) if cause else None
    shared = continue_trace(inbound) if valid_traceparent(inbound) else None
    for output in result.outputs:
        traceparent = shared or _referral_trace(tx, output.event.referral_id)
        for message in _render(hub, tx, output, traceparent):
            tx.add_outbox(message)
        append(hub, tx, _audit_record(hub, tx, output), traceparent)
