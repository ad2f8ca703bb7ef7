"""Rendering the consent gate's outputs into outbox messages, in the gate's transaction.
Shared by every service that can release (intake, consent, timers)."""

from __future__ import annotations

from adapters.broker.cloudevents import ce_headers, continue_trace
from adapters.municipal.iwmo import identificatie, iwmo_from_disclosure
from adapters.storage.store import Tx
from adapters.welfare.intake import intake_from_disclosure, intake_json, revoked_json
from schemas.ids import message_id, release_id
from schemas.messages import InboundRecord, OutboundMessage
from schemas.registration import ReferralReleased, ReferralRevoked
from schemas.topics import CE_REFERRAL_RELEASED, CE_REFERRAL_REVOKED, CE_REFERRAL_UPDATED, Header
from services.domain.gate import REVOKE_REASON, GatePolicy, GateResult, Output
from services.runtime import Hub

XML = "application/xml"
JSON = "application/json"


def gate_policy(hub: Hub) -> GatePolicy:
    return GatePolicy(
        municipalities=frozenset(p.id for p in hub.participants.of_kind("municipality"))
    )


def _topic(hub: Hub, recipient_id: str) -> str:
    participant = hub.participants.by_id[recipient_id]
    if participant.kind == "municipality":
        return hub.topics.wmo_registrations(participant.cbs_code or "")
    return hub.topics.welfare_referrals(participant.id)


def _render(hub: Hub, tx: Tx, output: Output, traceparent: str) -> OutboundMessage:
    event = output.event
    recipient = hub.participants.by_id[event.recipient_id]
    if isinstance(event, ReferralRevoked):
        ce_id, ce_type, at, content_type = (
            message_id("revoked", event.referral_id, event.recipient_id),
            CE_REFERRAL_REVOKED,
            event.revoked_at,
            JSON,
        )
        body = revoked_json(
            referral_id=event.referral_id,
            registration_id=event.registration_id,
            revoked_at=event.revoked_at,
            reason=REVOKE_REASON,
        )
    else:
        assert output.disclosure is not None
        released = isinstance(event, ReferralReleased)
        at = event.released_at if isinstance(event, ReferralReleased) else event.updated_at
        ce_type = CE_REFERRAL_RELEASED if released else CE_REFERRAL_UPDATED
        ce_id = (
            release_id(event.referral_id, event.recipient_id)
            if released
            else message_id(
                "updated", event.referral_id, event.recipient_id, output.disclosure.fingerprint()
            )
        )
        if recipient.kind == "municipality":
            stored = tx.referral(event.referral_id)
            welfare = hub.participants.by_id[stored.recipient_id] if stored else None
            content_type = XML
            body = iwmo_from_disclosure(
                output.disclosure,
                identificatie=identificatie(tx.next_number("iwmo-identificatie")),
                ontvanger=recipient.cbs_code or "",
                registration_id=event.registration_id,
                welfare_id=welfare.id if welfare else "onbekend",
                welfare_name=welfare.name if welfare else "onbekend",
                sent_at=at,
            )
        else:
            content_type = JSON
            body = intake_json(
                intake_from_disclosure(
                    output.disclosure,
                    registration_id=event.registration_id,
                    consent_id=event.consent_id,
                    released_at=at,
                    contact_within_days=recipient.contact_within_days,
                )
            )
    return OutboundMessage(
        message_id=ce_id,
        topic=_topic(hub, event.recipient_id),
        key=event.referral_id.encode(),
        value=body,
        headers=ce_headers(
            ce_id=ce_id,
            ce_type=ce_type,
            time=at,
            traceparent=traceparent,
            subject=event.referral_id,
            content_type=content_type,
        ),
    )


def outputs_to_outbox(hub: Hub, tx: Tx, result: GateResult, cause: InboundRecord | None) -> None:
    """One message per gate output. The trace continues from the record that caused it
    (the one that completed a referral+consent pair, or the withdrawal)."""
    if not result.outputs:
        return
    traceparent = continue_trace(cause.header(Header.TRACEPARENT) if cause else None)
    for output in result.outputs:
        tx.add_outbox(_render(hub, tx, output, traceparent))
