"""`on_referral_created`: read, check and route each referral, then let the consent gate
decide, all of one batch in one transaction (see `services.pipeline`)."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.broker.cloudevents import valid_traceparent
from adapters.fhir.referral import referral_from_fhir
from adapters.fhir.validate import load_json, validate_resource
from adapters.redaction import remember
from adapters.storage.store import Tx
from schemas.ids import registration_id_for
from schemas.messages import InboundRecord
from schemas.participants import Participant
from schemas.referral import Referral
from schemas.registration import HubEvent
from schemas.topics import CE_REFERRAL_CREATED, Header
from services.domain import gate
from services.domain.routing import route
from services.outputs import gate_policy, outputs_to_outbox
from services.pipeline import BatchPipeline
from services.runtime import Hub


@dataclass(frozen=True, slots=True)
class RoutedReferral:
    referral: Referral
    recipient: Participant


def intake_pipeline(hub: Hub) -> BatchPipeline[RoutedReferral]:
    settings = hub.settings
    policy = gate_policy(hub)

    def prepare(record: InboundRecord) -> RoutedReferral:
        data = load_json(record.value, settings.max_message_bytes)
        validate_resource(data, personal=remember)  # names etc. to the log redaction first
        referral = referral_from_fhir(
            data, hub.participants, allow_test_bsn=settings.allow_test_bsn
        )
        return RoutedReferral(referral, route(referral, hub.participants))

    def apply(tx: Tx, record: InboundRecord, routed: RoutedReferral) -> list[HubEvent]:
        trace = record.header(Header.TRACEPARENT)
        result = gate.on_referral(
            tx,
            routed.referral,
            routed.recipient.id,
            hub.clock(),
            policy,
            trace=trace if valid_traceparent(trace) else None,
        )
        outputs_to_outbox(hub, tx, result, record)
        return list(result.events)

    def prefetch(tx: Tx, batch: list[RoutedReferral]) -> None:
        tx.prefetch(
            referrals=[r.referral.referral_id for r in batch],
            registrations=[
                registration_id_for(r.referral.referral_id, r.recipient.id) for r in batch
            ],
            consents_for=[(r.referral.referral_id, r.referral.client.bsn) for r in batch],
            patients=[r.referral.client.bsn for r in batch],
        )

    return BatchPipeline(
        hub, event_type=CE_REFERRAL_CREATED, prepare=prepare, apply=apply, prefetch=prefetch
    )
