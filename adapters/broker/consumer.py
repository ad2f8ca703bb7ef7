"""FastStream glue for batch subscribers that must never lose a record.

FastStream's own batch parser decodes every header value as UTF-8; one record with a
binary header would make it raise before any handler runs, and the batch would be
committed unhandled. `safe_batch_parser` hands FastStream a header-sanitised copy for
its own bookkeeping and keeps the untouched records as `raw_message`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from schemas.messages import InboundRecord


def _text_header(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def safe_batch_parser(
    records: tuple[ConsumerRecord[Any, Any], ...],
    original: Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[Any]],
) -> Any:
    try:
        sanitised = tuple(
            r
            if all(_text_header(v) for _, v in r.headers)
            else dataclasses.replace(r, headers=[(k, v) for k, v in r.headers if _text_header(v)])
            for r in records
        )
        message = await original(sanitised)
    except Exception:  # noqa: BLE001 - FastStream's metadata only; never lose the batch
        message = await original(tuple(dataclasses.replace(r, headers=[]) for r in records))
    message.raw_message = records
    return message


async def raw_records(message: Any, _original: Any = None) -> Any:
    """What a handler is called with: the batch's untouched records, as `safe_batch_parser`
    kept them (`raw_message`). The hub's broker is built with `apply_types=False`, so
    FastStream hands this over as it is; with dependency injection, a `KafkaMessage`
    parameter was resolved in a worker thread for every batch (a thread hop and a task
    group per poll)."""
    return message.raw_message


def inbound(records: Sequence[ConsumerRecord[Any, Any]]) -> list[InboundRecord]:
    return [
        InboundRecord(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value,
            headers=tuple((k, v) for k, v in r.headers),
            timestamp_ms=r.timestamp,
        )
        for r in records
    ]


class AssignmentTracker(ConsumerRebalanceListener):
    """Lets start-up (and tests) await the first partition assignment instead of sleeping."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.assigned = asyncio.Event()
        self.partitions: frozenset[TopicPartition] = frozenset()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.partitions = self.partitions - frozenset(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.partitions = frozenset(assigned)
        self.assigned.set()


@dataclass(frozen=True)
class ConsumerTuning:
    """Group and fetch timings. On the embedded broker a group join takes about half the
    session timeout (BROKER.md §3), so it gets short ones; Kafka keeps its usual values."""

    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_wait_ms: int
    max_partition_fetch_bytes: int

    @classmethod
    def choose(
        cls,
        *,
        embedded: bool,
        session_timeout_ms: int | None,
        heartbeat_interval_ms: int | None,
        fetch_max_wait_ms: int,
        max_message_bytes: int,
    ) -> ConsumerTuning:
        session = session_timeout_ms or (1_000 if embedded else 10_000)
        heartbeat = heartbeat_interval_ms or max(100, session // 10 if embedded else session // 3)
        return cls(
            session, heartbeat, fetch_max_wait_ms, max(1_048_576, max_message_bytes + 65_536)
        )

    def subscriber_kwargs(
        self, group_id: str, max_records: int, tracker: AssignmentTracker
    ) -> dict[str, Any]:
        return {
            "batch": True,
            "max_records": max_records,
            "batch_timeout_ms": 200,
            "group_id": group_id,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "listener": tracker,
            "parser": safe_batch_parser,
            "decoder": raw_records,
        }
