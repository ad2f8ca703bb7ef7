"""Reading topics to their end, for the replay and the relay's effectively-once check.

"The end" needs care on the embedded broker: its ListOffsets answers the base offset of the
last record batch plus one, so after a multi-record batch it undercounts. A partition is
therefore done only when the consumer is past the end offset *and* a poll brought nothing
new for it.

Every poll asks for all partitions still being read: a broker answers all of its partitions
in one fetch, which it may hold for the consumer's whole `fetch_max_wait_ms` (the embedded
one does, BROKER.md §3), so asking per partition costs that wait once per partition and
buffer refill (the replay spent half its time there). A partition that is far ahead of the
reader is paused until its buffer is drained, so memory stays bounded when the order of
reading favours a few partitions.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adapters.logging import get_logger

READ_AHEAD = 5_000
"""Records buffered per partition before it is paused (unless it is the one wanted)."""
STUCK_POLLS = 20
"""Polls in a row that bring nothing at all, for any partition, after which a partition
short of its end is taken as read (about 6 s): a broker that lost its state can acknowledge records nobody can read
afterwards (the end offset counts them, no fetch returns them), and waiting for them would
stall the reader, and the outbox relay's check with it, for good."""
__all__ = ["PartitionReader", "TopicPartition", "last_records"]
log = get_logger("schakel.broker-reading")


class PartitionReader:
    """One consumer (no group) over given partitions, read on demand per partition."""

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            client_id=client_id,
        )
        self.ends: dict[TopicPartition, int] = {}
        self.buffers: dict[TopicPartition, deque[ConsumerRecord[Any, Any]]] = {}
        self.exhausted: set[TopicPartition] = set()
        self._empty: dict[TopicPartition, tuple[int, int]] = {}  # position, empty polls there

    async def __aenter__(self) -> PartitionReader:
        try:
            await self.consumer.start()
        except BaseException:
            await self.consumer.stop()  # no "Unclosed AIOKafkaConsumer" left behind
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # One turn of the loop first: a consumer stopped before its no-group coordinator's
        # task ever ran raises that task's CancelledError from `stop` (aiokafka 0.12).
        await asyncio.sleep(0)
        await self.consumer.stop()

    def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        return [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.consumer.partitions_for_topic(t) or [])
        ]

    async def assign(self, partitions: list[TopicPartition]) -> None:
        self.consumer.assign(partitions)
        self.ends = await self.consumer.end_offsets(partitions)
        self.buffers = {tp: deque() for tp in partitions}

    async def beginnings(self) -> dict[TopicPartition, int]:
        return dict(await self.consumer.beginning_offsets(list(self.ends)))

    async def offsets_at(self, moment: datetime) -> dict[TopicPartition, int]:
        """The first offset at or after `moment` per partition; the end when there is none
        (Kafka answers None, the embedded broker (0, -1))."""
        found = await self.consumer.offsets_for_times(
            {tp: int(moment.timestamp() * 1000) for tp in self.ends}
        )
        return {
            tp: (self.ends[tp] if (o is None or o.timestamp == -1) else o.offset)
            for tp, o in found.items()
        }

    def seek(self, starts: dict[TopicPartition, int]) -> None:
        for tp, offset in starts.items():
            self.consumer.seek(tp, offset)

    async def fill(self, wanted: TopicPartition) -> None:
        """One poll of every partition still being read; `wanted` is never paused. A polled
        partition the poll brought nothing for is exhausted once past its end."""
        full = {
            tp
            for tp, buffer in self.buffers.items()
            if tp != wanted and tp not in self.exhausted and len(buffer) >= READ_AHEAD
        }
        paused = self.consumer.paused()
        if full - paused:
            self.consumer.pause(*(full - paused))
        if paused - full:
            self.consumer.resume(*(paused - full))
        batch = await self.consumer.getmany(timeout_ms=300)
        for tp, records in batch.items():
            self.buffers[tp].extend(records)
        for tp in self.buffers:
            if tp in batch or tp in full or tp in self.exhausted:
                continue
            position = await self.consumer.position(tp)
            if position >= self.ends[tp]:
                self.exhausted.add(tp)
                continue
            if batch:  # the reader is getting somewhere: not stuck
                self._empty.pop(tp, None)
                continue
            at, polls = self._empty.get(tp, (position, 0))
            polls = polls + 1 if at == position else 1
            self._empty[tp] = (position, polls)
            if polls >= STUCK_POLLS:
                log.warning(
                    "records up to the end offset cannot be read; taking the partition as read",
                    topic=tp.topic,
                    partition=tp.partition,
                    position=position,
                    end_offset=self.ends[tp],
                )
                self.exhausted.add(tp)

    async def take(self, tp: TopicPartition, offset: int) -> ConsumerRecord[Any, Any] | None:
        """The record at `offset`, or None when the partition no longer holds it."""
        buffer = self.buffers[tp]
        while True:
            while buffer and buffer[0].offset < offset:
                buffer.popleft()
            if buffer:
                return buffer.popleft() if buffer[0].offset == offset else None
            if tp in self.exhausted:
                return None
            await self.fill(tp)

    async def rest(self, tp: TopicPartition) -> list[ConsumerRecord[Any, Any]]:
        """Everything from the current position to the end."""
        while tp not in self.exhausted:
            await self.fill(tp)
        records = list(self.buffers[tp])
        self.buffers[tp].clear()
        return records


async def last_records(bootstrap: str, topic: str) -> list[ConsumerRecord[Any, Any]]:
    """The last record of each of the topic's partitions (none for an empty one)."""
    async with PartitionReader(bootstrap, "schakel-last-records") as reader:
        partitions = reader.partitions([topic])
        if not partitions:
            return []
        await reader.assign(partitions)
        beginnings = await reader.beginnings()
        # From the end offset less one (the embedded broker's can be short: `rest` reads on)
        reader.seek({tp: max(beginnings[tp], end - 1) for tp, end in reader.ends.items()})
        last = []
        for tp in partitions:
            records = await reader.rest(tp)
            if records:
                last.append(records[-1])
        return last
