"""`on_feedback_returned`: check who speaks, move the registration on, tell the GP."""

from __future__ import annotations

from adapters.storage.store import Tx
from adapters.welfare.feedback import feedback_from_bytes
from schemas.feedback import WelfareFeedback
from schemas.messages import InboundRecord
from schemas.registration import HubEvent
from schemas.topics import CE_FEEDBACK_RETURNED
from services.domain.feedback import on_feedback
from services.outputs import gate_policy, outputs_to_outbox
from services.pipeline import BatchPipeline
from services.runtime import Hub


def feedback_pipeline(hub: Hub) -> BatchPipeline[WelfareFeedback]:
    policy = gate_policy(hub)

    def prepare(record: InboundRecord) -> WelfareFeedback:
        return feedback_from_bytes(record.value, hub.settings.max_message_bytes)

    def apply(tx: Tx, record: InboundRecord, feedback: WelfareFeedback) -> list[HubEvent]:
        result = on_feedback(tx, feedback, hub.clock(), policy)
        outputs_to_outbox(hub, tx, result, record)
        return list(result.events)

    return BatchPipeline(hub, event_type=CE_FEEDBACK_RETURNED, prepare=prepare, apply=apply)
