"""Plain aiokafka clients the bench drives the broker with: the load producer, the
counting consumer (records are counted by consuming them: the embedded broker's end
offsets undercount after multi-record batches, adapters/broker/reading.py), a paced
sender for fixed offered rates, and the raw pass-through pipe that is the baseline.

Every time is `time.monotonic()` (CLOCK_MONOTONIC, one clock for every process on the
machine), so a time taken in the system under test compares with one taken here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from adapters.broker.consumer import ConsumerTuning
from adapters.broker.outbox import PRODUCER_BATCH_BYTES
from bench.workload import Message
from services import collector

MAX_REQUEST = 32 * 1024 * 1024
FETCH_BYTES = 2 * 1024 * 1024


def producer(
    bootstrap: str, *, linger_ms: int = 5, client_id: str = "bench-load"
) -> AIOKafkaProducer:
    """acks=all, no idempotence (the embedded broker refuses it), records sharing batches."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        max_batch_size=PRODUCER_BATCH_BYTES,  # the hub's relay batches as much
        max_request_size=MAX_REQUEST,
        client_id=client_id,
    )


async def preload(
    bootstrap: str, messages: Iterable[Message], every: int = 5_000
) -> tuple[int, float]:
    """Produce everything as fast as the broker takes it; (count, seconds)."""
    started = time.monotonic()
    sent = 0
    client = producer(bootstrap)
    await client.start()
    try:
        futures: list[asyncio.Future[Any]] = []
        for m in messages:
            futures.append(await client.send(m.topic, m.value, key=m.key, headers=list(m.headers)))
            sent += 1
            if len(futures) >= every:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await client.stop()
    return sent, time.monotonic() - started


def header(record: Any, name: str) -> bytes | None:
    for k, v in record.headers:
        if k == name:
            return v
    return None


@dataclass
class Counter:
    """Reads topics from their beginning (no group) and notes when each wanted record
    arrived: `arrivals[key]` is the time of the first record for that key that `accept`
    takes. `accept(record)` returns the key to count it under, or None to skip it. With
    `remember=False` (a long soak) only the count is kept, not every key."""

    bootstrap: str
    topics: list[str]
    accept: Callable[[Any], bytes | None]
    fetch_max_wait_ms: int = 10
    remember: bool = True
    on_arrival: Callable[[Any, float], None] | None = None
    arrivals: dict[bytes, float] = field(default_factory=dict)
    count: int = 0
    last: float = 0.0
    records: int = 0
    duplicates: int = 0

    def __post_init__(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=FETCH_BYTES,
            client_id="bench-counter",
        )
        self._task: asyncio.Task[None] | None = None
        self._grown = asyncio.Event()

    async def start(self) -> Counter:
        await self.consumer.start()
        partitions = [
            TopicPartition(t, p)
            for t in self.topics
            for p in sorted(self.consumer.partitions_for_topic(t) or ())
        ]
        if not partitions:
            raise RuntimeError(f"no partitions for {self.topics}")
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)
        for tp in partitions:  # resolve the start positions now, not on the first poll
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name="bench-counter")
        return self

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    self.records += 1
                    key = self.accept(record)
                    if key is None:
                        continue
                    if self.remember:
                        if key in self.arrivals:
                            self.duplicates += 1
                            continue
                        self.arrivals[key] = now
                    self.count += 1
                    self.last = now
                    if self.on_arrival is not None:
                        self.on_arrival(record, now)
            if batch:
                self._grown.set()

    async def until(self, count: int, timeout: float) -> float:
        """Until `count` keys arrived; returns the time the last of them arrived. Raises
        TimeoutError with how many did."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.count} of {count} arrived within {timeout:.0f} s")
            self._grown.clear()
            try:
                await asyncio.wait_for(self._grown.wait(), min(left, 1.0))
            except TimeoutError:
                continue
        return self.last

    def _check(self) -> None:
        if self._task is not None and self._task.done() and self._task.exception():
            raise RuntimeError("the counting consumer failed") from self._task.exception()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


def by_ce_type(*types: str) -> Callable[[Any], bytes | None]:
    wanted = {t.encode() for t in types}

    def accept(record: Any) -> bytes | None:
        return record.key if header(record, "ce_type") in wanted else None

    return accept


def every_record(record: Any) -> bytes | None:
    return record.key


@dataclass
class Paced:
    scheduled: dict[bytes, float]
    started: float
    seconds: float
    max_lag: float
    """How far the sender fell behind its own schedule (large: the load generator, not the
    system under test, limited the offered rate)."""


async def pace(bootstrap: str, messages: list[Message], rate: float) -> Paced:
    """Send at a fixed offered rate. A message's latency counts from when it was due, not
    from when it went out, so a sender that falls behind cannot hide a slow system
    (no coordinated omission). Acknowledgements are never waited for between two sends
    (waiting every 1,000 sends for the last ones' put the sender up to a broker round trip
    behind its schedule); a failed send raises at the next check (every 1,000 sends), the
    rest are awaited at the end."""
    client = producer(bootstrap, linger_ms=0, client_id="bench-pacer")
    await client.start()
    scheduled: dict[bytes, float] = {}
    futures: list[asyncio.Future[Any]] = []
    lag = 0.0
    try:
        start = time.monotonic() + 0.05
        for i, m in enumerate(messages):
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                lag = max(lag, now - due)
            scheduled[m.key] = due
            futures.append(await client.send(m.topic, m.value, key=m.key, headers=list(m.headers)))
            if len(futures) >= 1_000:
                futures = _unacknowledged(futures)
        await asyncio.gather(*futures)
    finally:
        await client.stop()
    return Paced(scheduled, start, len(messages) / rate, lag)


def _unacknowledged(futures: list[asyncio.Future[Any]]) -> list[asyncio.Future[Any]]:
    """The sends not acknowledged yet; a failed one raises its error."""
    for future in futures:
        if future.done():
            future.result()
    return [f for f in futures if not f.done()]


class _Stamp(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned and self.first is None:
            self.first = (time.monotonic(), time.process_time())
            self.assigned.set()


class RawPipe:
    """The baseline: consume A, produce every record to B, batched (getmany, the sends of a
    poll gathered, then one commit), acks=all, no idempotence. Same group timings, fetch
    wait and records per poll as the hub's consumers."""

    def __init__(
        self,
        bootstrap: str,
        source: str,
        target: str,
        group: str,
        tuning: ConsumerTuning,
        max_records: int,
    ) -> None:
        self.source, self.target, self.max_records = source, target, max_records
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=tuning.session_timeout_ms,
            heartbeat_interval_ms=tuning.heartbeat_interval_ms,
            fetch_max_wait_ms=tuning.fetch_max_wait_ms,
            max_partition_fetch_bytes=tuning.max_partition_fetch_bytes,
            client_id="bench-raw-pipe",
        )
        self.producer = producer(bootstrap, client_id="bench-raw-pipe")
        self.stamp = _Stamp()
        self.moved = 0
        self._task: asyncio.Task[None] | None = None
        self._tuned = False

    async def start(self, timeout: float = 30.0) -> tuple[float, float]:
        collector.tune()  # the hub's tuning of the garbage collector, until stop()
        self._tuned = True
        try:
            await self.producer.start()
            await self.consumer.start()
            self.consumer.subscribe([self.source], listener=self.stamp)
            self._task = asyncio.create_task(self._run(), name="bench-raw-pipe")
            await asyncio.wait_for(self.stamp.assigned.wait(), timeout)
        except BaseException:
            self._untune()
            raise
        assert self.stamp.first is not None
        return self.stamp.first

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
            futures = [
                await self.producer.send(self.target, r.value, key=r.key, headers=list(r.headers))
                for records in batch.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await self.consumer.commit()
                self.moved += len(futures)

    def check(self) -> None:
        """Raises what stopped the pipe, if it stopped."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            raise RuntimeError(f"the raw pipe stopped: {error!r}") from error

    async def stop(self) -> None:
        try:
            if self._task is not None:
                self.check()
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            await self.consumer.stop()
            await self.producer.stop()
        finally:
            self._untune()

    def _untune(self) -> None:
        if self._tuned:
            self._tuned = False
            collector.restore()
