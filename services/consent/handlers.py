"""`on_consent_granted` / `on_consent_withdrawn`: record the consent, then release every
held referral it now covers (see `services.domain.gate`)."""

from __future__ import annotations

from adapters.fhir.consent import GRANTED, WITHDRAWN, consent_from_fhir
from adapters.fhir.validate import load_json, validate_resource
from adapters.redaction import remember
from adapters.storage.store import Tx
from schemas.consent import Consent
from schemas.messages import InboundRecord
from schemas.registration import HubEvent
from schemas.topics import CE_CONSENT_GRANTED, CE_CONSENT_WITHDRAWN
from services.domain import gate
from services.outputs import gate_policy, outputs_to_outbox
from services.pipeline import BatchPipeline
from services.runtime import Hub


def consent_pipeline(hub: Hub, *, withdrawn: bool = False) -> BatchPipeline[Consent]:
    settings = hub.settings
    policy = gate_policy(hub)
    expected = WITHDRAWN if withdrawn else GRANTED

    def prepare(record: InboundRecord) -> Consent:
        data = load_json(record.value, settings.max_message_bytes)
        validate_resource(data, personal=remember)  # names etc. to the log redaction first
        return consent_from_fhir(
            data, hub.participants, expected_status=expected, allow_test_bsn=settings.allow_test_bsn
        )

    def apply(tx: Tx, record: InboundRecord, consent: Consent) -> list[HubEvent]:
        result = gate.on_consent(tx, consent, hub.clock(), policy)
        outputs_to_outbox(hub, tx, result, record)
        return list(result.events)

    def prefetch(tx: Tx, batch: list[Consent]) -> None:
        named = [ref.value for c in batch for ref in c.referrals]
        tx.prefetch(consents=[c.consent_id for c in batch], referrals=named)
        found = [s.referral for r in named if (s := tx.referral(r)) is not None]
        tx.prefetch(consents_for=[(r.referral_id, r.client.bsn) for r in found])

    return BatchPipeline(
        hub,
        event_type=CE_CONSENT_WITHDRAWN if withdrawn else CE_CONSENT_GRANTED,
        prepare=prepare,
        apply=apply,
        prefetch=prefetch,
    )
