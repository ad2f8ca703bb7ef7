"""Helpers for tests that run the hub against a real broker and a real store."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adapters.broker.admin import delete_topics
from adapters.broker.client import Sender, inbound_headers
from schemas import topics as names
from schemas.registration import HubEvent
from services.demo.samples import consent_resource, referral_bundle, to_bytes
from services.hub import RunningHub, start_hub
from services.runtime import Observers
from services.settings import DEMO_PARTICIPANTS, HubSettings

E = TypeVar("E")
TIMEOUT = 20.0


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


def settings_for(bootstrap: str, database_url: str, prefix: str, **kw: Any) -> HubSettings:
    return HubSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        participants=DEMO_PARTICIPANTS,
        topic_partitions=kw.pop("topic_partitions", 3),
        **kw,
    )


@contextlib.asynccontextmanager
async def running(settings: HubSettings) -> AsyncIterator[RunningHub]:
    hub = await start_hub(settings)
    try:
        await hub.wait_assigned(TIMEOUT)
        yield hub
    finally:
        await hub.stop()
        with contextlib.suppress(Exception):
            names = [s for s in await _topics_with_prefix(settings)]
            await delete_topics(settings.kafka_bootstrap_servers or "", names)


async def _topics_with_prefix(settings: HubSettings) -> list[str]:
    from adapters.broker.admin import _admin

    admin = _admin(settings.kafka_bootstrap_servers or "", 10_000)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
    finally:
        await admin.close()


async def send(
    bootstrap: str,
    topic: str,
    value: bytes | None,
    key: str | bytes | None,
    *,
    logical: str,
    headers: tuple[tuple[str, bytes | None], ...] | None = None,
    traceparent: str | None = None,
) -> None:
    async with Sender(bootstrap) as sender:
        await sender.send(
            topic,
            value,
            key=key.encode() if isinstance(key, str) else key,
            headers=headers
            if headers is not None
            else inbound_headers(logical, traceparent=traceparent),
        )


async def next_event(
    queue: asyncio.Queue[HubEvent], kind: type[E], timeout: float = TIMEOUT, **match: Any
) -> E:
    return await Observers.next(queue, kind, timeout, **match)


async def send_referral(hub: RunningHub, referral_id: str, **bundle: Any) -> None:
    await send(
        hub.bootstrap,
        hub.hub.topics.referral_created,
        to_bytes(referral_bundle(referral_id, **bundle)),
        referral_id,
        logical=names.REFERRAL_CREATED,
    )


async def send_consent(
    hub: RunningHub,
    consent_id: str,
    referral_id: str | None,
    *,
    traceparent: str | None = None,
    withdraw: bool = False,
    **consent: Any,
) -> None:
    """A grant on consent-granted, or with `withdraw` the same Consent, inactive, on
    consent-withdrawn."""
    if withdraw:
        consent.setdefault("status", "inactive")
    topics = hub.hub.topics
    await send(
        hub.bootstrap,
        topics.consent_withdrawn if withdraw else topics.consent_granted,
        to_bytes(consent_resource(consent_id, referral_id=referral_id, **consent)),
        referral_id or consent_id,
        logical=names.CONSENT_WITHDRAWN if withdraw else names.CONSENT_GRANTED,
        traceparent=traceparent,
    )


class TopicReader:
    """Reads a topic from the beginning, as a recipient would (no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        self.partitions: list[TopicPartition] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read(self, count: int, timeout: float = TIMEOUT) -> list[ConsumerRecord[Any, Any]]:
        got: list[ConsumerRecord[Any, Any]] = []

        async def loop() -> None:
            while len(got) < count:
                batch = await self.consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    got.extend(records)

        await asyncio.wait_for(loop(), timeout)
        return got

    async def total(self) -> int:
        ends = await self.consumer.end_offsets(self.partitions)
        return sum(ends.values())


async def until(
    condition: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition"
) -> None:
    """Polls a state the test cannot be notified of (another process's store). Bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
