"""A small producer for senders (`schakel send`, the demo, tests): publishes an inbound
event the way a GP system would, with CloudEvents headers and a fresh trace."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from uuid import uuid4

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from adapters.broker.admin import BrokerError
from adapters.broker.cloudevents import ce_headers, continue_trace
from schemas.messages import Headers
from schemas.topics import INBOUND_CE_TYPES


def inbound_headers(logical_topic: str, *, traceparent: str | None = None) -> Headers:
    return ce_headers(
        ce_id=str(uuid4()),
        ce_type=INBOUND_CE_TYPES[logical_topic],
        time=datetime.now(UTC),
        traceparent=traceparent or continue_trace(None),
    )


class Sender:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = self._producer()

    def _producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=False,
            client_id="schakel-send",
            max_request_size=32 * 1024 * 1024,
        )

    async def renew(self) -> None:
        """A fresh producer, without metadata cached from a broker that lost its state."""
        old, self.producer = self.producer, self._producer()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.stop(), 5)
        await self.producer.start()

    async def __aenter__(self) -> Sender:
        try:
            await self.producer.start()
        except Exception as exc:
            await self.producer.stop()
            raise BrokerError(f"cannot connect to Kafka: {type(exc).__name__}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: Headers = ()
    ) -> RecordMetadata:
        return await self.producer.send_and_wait(topic, value, key=key, headers=list(headers))
