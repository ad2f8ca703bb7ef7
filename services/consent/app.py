"""The consent service as a FastStream app (built by `services.hub`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaRouter
from faststream.middlewares import AckPolicy

from adapters.broker.consumer import AssignmentTracker, ConsumerTuning, inbound
from services.consent.handlers import consent_pipeline
from services.consent.settings import ConsentSettings
from services.runtime import Hub

SERVICE = "consent"


def create_router(
    hub: Hub,
    tuning: ConsumerTuning,
    granted_tracker: AssignmentTracker,
    withdrawn_tracker: AssignmentTracker,
) -> KafkaRouter:
    router = KafkaRouter()
    settings = ConsentSettings()
    granted = consent_pipeline(hub)
    withdrawn = consent_pipeline(hub, withdrawn=True)

    @router.subscriber(
        hub.topics.consent_granted,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{hub.topics.consent_granted}:on_consent_granted",
        description="FHIR R4 Consent, status active (CONTRACT §3).",
        **tuning.subscriber_kwargs(
            hub.settings.group_id(SERVICE), settings.max_records, granted_tracker
        ),
    )
    async def on_consent_granted(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await granted.handle(inbound(records))

    @router.subscriber(
        hub.topics.consent_withdrawn,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{hub.topics.consent_withdrawn}:on_consent_withdrawn",
        description="FHIR R4 Consent, status inactive or rejected: stops further releases.",
        **tuning.subscriber_kwargs(
            hub.settings.group_id(f"{SERVICE}-withdrawn"), settings.max_records, withdrawn_tracker
        ),
    )
    async def on_consent_withdrawn(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await withdrawn.handle(inbound(records))

    return router
