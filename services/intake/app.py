"""The intake service as a FastStream app. Nothing connects at import time: the router and
app are built from a `Hub` by the composition root (`services.hub`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaRouter
from faststream.middlewares import AckPolicy

from adapters.broker.consumer import AssignmentTracker, ConsumerTuning, inbound
from services.intake.handlers import intake_pipeline
from services.intake.settings import IntakeSettings
from services.runtime import Hub

SERVICE = "intake"


def create_router(hub: Hub, tuning: ConsumerTuning, tracker: AssignmentTracker) -> KafkaRouter:
    router = KafkaRouter()
    pipeline = intake_pipeline(hub)
    settings = IntakeSettings()

    @router.subscriber(
        hub.topics.referral_created,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{hub.topics.referral_created}:on_referral_created",
        description="FHIR R4 referral Bundles from GP systems (CONTRACT §3).",
        **tuning.subscriber_kwargs(hub.settings.group_id(SERVICE), settings.max_records, tracker),
    )
    async def on_referral_created(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await pipeline.handle(inbound(records))

    return router
