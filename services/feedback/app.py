"""The feedback service as a FastStream app (built by `services.hub`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaRouter
from faststream.middlewares import AckPolicy

from adapters.broker.consumer import AssignmentTracker, ConsumerTuning, inbound
from services.feedback.handlers import feedback_pipeline
from services.feedback.settings import FeedbackSettings
from services.runtime import Hub

SERVICE = "feedback"


def create_router(hub: Hub, tuning: ConsumerTuning, tracker: AssignmentTracker) -> KafkaRouter:
    router = KafkaRouter()
    pipeline = feedback_pipeline(hub)

    @router.subscriber(
        hub.topics.feedback_returned,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{hub.topics.feedback_returned}:on_feedback_returned",
        description="Welfare feedback JSON (CONTRACT §5).",
        **tuning.subscriber_kwargs(
            hub.settings.group_id(SERVICE), FeedbackSettings().max_records, tracker
        ),
    )
    async def on_feedback_returned(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await pipeline.handle(inbound(records))

    return router
