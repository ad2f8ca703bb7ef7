"""The outbox relay: publishes what handlers committed to the store's outbox.

Handlers never publish; they write outbound messages in the transaction that changed
state. The relay sends pending rows in id order (per topic-partition order follows), with
records sharing batches, and marks them published once the broker acknowledged them.
Effectively once: each acknowledged message's partition and offset are stored with its
row (marks are written together, every `MARK_EVERY_SECONDS` under load; rows acknowledged
but not yet marked are not read as pending meanwhile, and the relay marks everything
before it goes idle, stops or pauses). Before the first pass after start-up, and after any
failed pass, the relay reads the destination topics from the last known offsets (or from
just before the oldest pending row) and marks every pending row whose ce_id is already
there as published, without sending it again. So a crash between the broker's
acknowledgement and the marking, or a send that timed out after the broker took it, does
not send a message twice; and a row is only ever marked after the broker holds it, so
none is lost. Rows handed back after the broker lost its state (`Store.broker_lost`, run by
every instance whose watch notices the loss) are checked the same way before any pass
sends them, so one instance's recovery does not send again what the relaying instance has
already sent to the new broker. (The embedded broker
refuses the idempotent producer, so this cannot be left to Kafka.)

Several hub instances may share one store: exactly one of them relays, the one holding the
store's relay lock (`Store.relay_lock`: a PostgreSQL advisory lock, or a file lock beside
an SQLite database). The lock is released the moment its holder dies, and whoever takes it
next checks the topics first, as after a crash. The others' relays stay idle and poll for
the lock; their handlers' outputs are published by the holder within `IDLE_POLL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from sqlalchemy.exc import DBAPIError

from adapters.broker.reading import PartitionReader
from adapters.logging import get_logger
from adapters.storage.store import OutboxRow, Store

log = get_logger("schakel.outbox")

BATCH_ROWS = 500
RECONCILE_ROWS = 100_000
IDLE_POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
MARK_EVERY_SECONDS = 0.1
"""Acknowledged rows are marked published together, at most this long after (each mark is
a store transaction of its own: at 500 consents/s a pass carried three or four rows)."""
OFF_LOOP_SECONDS = 30.0
"""After the store refused a quick call on the event loop, how long its calls take a thread."""
PRODUCER_BATCH_BYTES = 256 * 1024
"""Room for one partition's records in one produce request. aiokafka's default (16 KiB)
holds a handful of releases and audit events; a send that finds its partition's batch full
waits until that batch goes out, and aiokafka sends a broker its next request only once
the one in flight is answered, so a pass of 500 rows took one broker round trip per few
rows: at 1,000 consents/s the relay fell up to seconds behind (bench, latency phase:
release p99 0.19-1.2 s; with this 0.13-0.34 s, the same runs alternated). Below Kafka's
default `max.message.bytes` (1 MB), which bounds a batch; a larger single record still
goes, in a batch of its own."""
PRODUCER_LINGER_MS = 0
"""No linger. A pass appends all its rows before the producer's sender runs, so they share
batches without one; and while a request is in flight (one per broker) the next rows
gather anyway. A linger was one more step of a pass on the event loop: its timer, due
after 5 ms, fired only when the consumers' transaction running then had ended, 30-60 ms
at 1,000 consents/s. Alternated (latency split at the commit, two rounds each in two runs
per setting): from the commit until the release was read p50 31.0 / 31.3 -> 15.2 / 13.5 ms
at 500/s, 541 / 684 -> 58 / 41 ms at 1,000/s; the hub's CPU per consent the same (0.920 /
0.934 against 0.924 / 0.863 ms at 1,000/s); throughput of 5,000 referrals 1,803 / 1,793 /
1,914 / 1,486 against 1,873 / 1,595 / 1,740 / 1,755 events/s (medians 1,798 and 1,748:
within the runs' spread)."""
T = TypeVar("T")
REFUSED = object()
"""The result of a send the broker refused as too large (in `OutboxRelay._acked`)."""


def make_producer(bootstrap: str, max_request_size: int) -> AIOKafkaProducer:
    """acks=all; no idempotence (the embedded broker refuses InitProducerId, BROKER.md §3),
    so duplicates are handled by deterministic ids instead."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=PRODUCER_LINGER_MS,
        max_batch_size=min(PRODUCER_BATCH_BYTES, max_request_size),
        max_request_size=max_request_size,
        client_id="schakel-outbox",
    )


def relay_producer(bootstrap: str, max_message_bytes: int) -> AIOKafkaProducer:
    """The relay's producer: room for the largest outbound message the hub may build from an
    inbound one of `max_message_bytes` (twice its size, plus headers)."""
    return make_producer(bootstrap, largest_outbound(max_message_bytes))


def largest_outbound(max_message_bytes: int) -> int:
    """The largest record the hub writes: a dead letter carries an inbound record of up to
    `max_message_bytes` with headers added, so room for twice that and 64 KiB. The
    dead-letter topic is created to take it (`max.message.bytes`, services.hub.topic_specs)."""
    return max(1_048_576, max_message_bytes * 2 + 65_536)


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        *,
        bootstrap: str,
        on_published: Callable[[list[OutboxRow]], None] | None = None,
        on_refused: Callable[[OutboxRow], None] | None = None,
    ) -> None:
        """`on_refused` is told of each row the broker refused as too large (marked refused,
        not sent: `Store.refused_outbox`), for a metric an operator can alert on."""
        self.store = store
        self.producer = producer
        self.bootstrap = bootstrap
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_published = on_published
        self._on_refused = on_refused
        self.published_total = 0
        self.refused_total = 0
        # One publisher at a time: two passes over the same pending rows would send them twice.
        self._lock = asyncio.Lock()
        self._reconciled = False
        self.reconciled_total = 0
        self._lock_of_store = store.relay_lock()
        self.holds_lock = False
        self._off_loop_until = 0.0
        # acknowledged by the broker, not marked yet (see `_mark`)
        self._acked: list[tuple[OutboxRow, object]] = []
        self._acked_ids: set[int] = set()
        self._marked_at = 0.0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self.producer.start()
        self._task = asyncio.create_task(self._run(), name="schakel-outbox-relay")

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Publish what is pending (bounded by `drain_timeout`), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, drain_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.producer.stop()
        await self.release_lock()

    async def release_lock(self) -> None:
        """Let another instance relay (done by `stop`, or by the OS when the process dies)."""
        await asyncio.to_thread(self._lock_of_store.release)
        self.holds_lock = False

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No pass runs inside (used while recovering from a broker that lost its state)."""
        async with self._lock:
            with contextlib.suppress(Exception):  # what the old broker took counts as sent
                await self._mark(everything=True)
            yield

    async def replace_producer(self, producer: AIOKafkaProducer) -> None:
        """A fresh producer (no metadata cached from a broker that is gone); the next pass
        checks the topics before it sends. Call inside `paused()`."""
        old, self.producer = self.producer, producer
        self._acked, self._acked_ids = [], set()  # the old broker's: its rows stay pending
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.stop(), 5)
        await producer.start()
        self._reconciled = False
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            self._wake.clear()  # before the pass: a commit during it wakes the next one
            try:
                async with self._lock:
                    sent = await self._publish_pending(mark_all=self._stopping)
                backoff = 0.1
            except (KafkaError, OSError) as exc:
                self._reconciled = False  # some of it may have reached the broker after all
                log.warning(
                    "outbox publish failed, will retry",
                    error=type(exc).__name__,
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            except Exception:
                self._reconciled = False
                log.exception("outbox relay error, will retry")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            if self._stopping and sent == 0 and not self._acked:
                return
            if self._stopping:
                continue  # the next pass marks what is acknowledged (`mark_all`)
            idle = IDLE_POLL_SECONDS
            if self._acked:  # back when their marking is due
                idle = max(0.0, MARK_EVERY_SECONDS - (time.monotonic() - self._marked_at))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), idle)

    async def publish_pending(self) -> int:
        """Publish every pending row; returns how many the broker acknowledged, all of them
        marked published when it returns."""
        async with self._lock:
            return await self._publish_pending(mark_all=True)

    async def _in_store(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The relay's reads and marks: on the event loop, waiting for no lock (a worker
        thread beside the loop contends for the GIL, as the pipeline's did); when the store
        refuses that, in a worker thread, and so for `OFF_LOOP_SECONDS`."""
        if time.monotonic() >= self._off_loop_until:
            try:
                return call(*args, quick=True, **kwargs)
            except DBAPIError as exc:
                self._off_loop_until = time.monotonic() + OFF_LOOP_SECONDS
                log.warning(
                    "store refused the relay on the event loop; using a worker thread",
                    error=type(exc).__name__,
                    for_seconds=OFF_LOOP_SECONDS,
                )
        return await asyncio.to_thread(call, *args, **kwargs)

    async def _hold_lock(self) -> bool:
        if self.holds_lock and self._lock_of_store.held_for_sure():
            return True
        held = await asyncio.to_thread(self._lock_of_store.acquire)
        if held and not self.holds_lock:
            log.info("outbox relay lock taken: this instance publishes the outbox")
            self._reconciled = False  # the last holder may have died between ack and mark
        elif self.holds_lock and not held:
            log.warning("outbox relay lock lost (store connection gone); not publishing")
        self.holds_lock = held
        return held

    async def _publish_pending(self, *, mark_all: bool) -> int:
        if not await self._hold_lock():
            return 0
        if not self._reconciled:
            await self._reconcile()
            self._reconciled = True
        total = 0
        while True:
            if total and not await self._hold_lock():
                return total  # between batches: still the holder?
            # Rows acknowledged but not marked yet are still pending in the store: read past
            # them. (A row that commits later with a lower id, as PostgreSQL's sequences
            # allow, is read once these are marked, within `MARK_EVERY_SECONDS`.)
            after = max(self._acked_ids) if self._acked_ids else None
            rows = await self._in_store(self.store.pending_outbox, BATCH_ROWS, after=after)
            if not rows:
                await self._mark(everything=mark_all)
                return total
            if any(row.check_first for row in rows):
                # Handed back by a recovery from the broker's loss, maybe another
                # instance's after this one sent them to the new broker: look first.
                await self._mark(everything=True)
                await self._reconcile()
                continue
            futures: list[asyncio.Future[object]] = []
            for row in rows:
                m = row.message
                try:
                    futures.append(
                        await self.producer.send(
                            m.topic, m.value, key=m.key, headers=list(m.headers)
                        )
                    )
                except KafkaError as exc:
                    failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
                    failed.set_exception(exc)
                    futures.append(failed)
            results = await asyncio.gather(*futures, return_exceptions=True)
            done: list[tuple[OutboxRow, object]] = []
            failure: BaseException | None = None
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, MessageSizeTooLargeError):
                    # Permanent: the broker will never take it. Say so; do not block the rest.
                    log.error(
                        "outbound message refused as too large; not sent. `schakel outbox "
                        "refused` lists it; raise the topic's max.message.bytes, then "
                        "`schakel outbox requeue --refused` sends it",
                        message_id=row.message.message_id,
                        topic=row.message.topic,
                        size=len(row.message.value or b""),
                    )
                    done.append((row, REFUSED))
                    self.refused_total += 1
                    if self._on_refused is not None:
                        self._on_refused(row)
                elif isinstance(result, BaseException):
                    failure = failure or result
                    break  # keep per-partition order: what follows a failure waits for the retry
                else:
                    done.append((row, result))
            self._acked.extend(done)
            self._acked_ids.update(r.id for r, _ in done)
            total += len(done)
            self.published_total += sum(1 for _, result in done if result is not REFUSED)
            if failure is not None:
                raise failure
            await self._mark(everything=False)

    async def _mark(self, *, everything: bool) -> None:
        """Mark the acknowledged rows published: now if `everything`, else when the last
        marking is `MARK_EVERY_SECONDS` ago. Runs inside a pass (or `paused`), under the
        relay's lock. On failure the rows stay acknowledged: not sent again, marked later
        (or found on their topics by the check after the failed pass)."""
        if not self._acked:
            return
        now = time.monotonic()
        if not everything and now - self._marked_at < MARK_EVERY_SECONDS:
            return
        batch = self._acked[:]
        sent = [
            (r.id, getattr(res, "partition", None), getattr(res, "offset", None))
            for r, res in batch
        ]
        refused = {r.id for r, res in batch if res is REFUSED}
        await self._in_store(self.store.mark_published, sent, refused=refused)
        del self._acked[: len(batch)]
        self._acked_ids.difference_update(r.id for r, _ in batch)
        self._marked_at = now
        if self._on_published is not None:
            self._on_published([r for r, _ in batch])

    async def _reconcile(self) -> None:
        """Mark pending rows that are already on their topics as published (see module doc)."""
        pending = await asyncio.to_thread(self.store.pending_outbox, RECONCILE_ROWS)
        if not pending:
            return
        wanted = {row.message.message_id: row for row in pending}
        topics = sorted({row.message.topic for row in pending})
        known = await asyncio.to_thread(self.store.sent_positions, topics)
        # Rows handed back after the broker's loss may be on their topic below offsets
        # marked since (the relay marks what it sent in the meantime): read those topics
        # by time, not from the highest offset known.
        handed_back = {row.message.topic for row in pending if row.check_first}
        known = {position: o for position, o in known.items() if position[0] not in handed_back}
        oldest = min(row.created_at for row in pending) - timedelta(minutes=5)
        found = await _find_on_topics(
            self.producer.client._bootstrap_servers, topics, known, oldest, set(wanted)
        )
        marked = [
            (wanted[message_id].id, tp.partition, offset)
            for message_id, (tp, offset) in found.items()
        ]
        if marked:
            await asyncio.to_thread(self.store.mark_published, marked)
            self.reconciled_total += len(marked)
            log.warning(
                "outbox: messages already on the broker were marked, not sent again",
                messages=len(marked),
                pending=len(pending),
            )
        not_there = [r.id for r in pending if r.check_first and r.message.message_id not in found]
        if not_there:
            await asyncio.to_thread(self.store.checked, not_there)


async def _find_on_topics(
    bootstrap: str,
    topics: list[str],
    known: dict[tuple[str, int], int],
    since: datetime,
    wanted: set[str],
) -> dict[str, tuple[TopicPartition, int]]:
    """ce_id -> (partition, offset) for every wanted message found on the topics, reading
    each partition from its last known offset (or from `since`) to its end."""
    found: dict[str, tuple[TopicPartition, int]] = {}
    async with PartitionReader(bootstrap, "schakel-outbox-check") as reader:
        partitions = reader.partitions(topics)
        if not partitions:
            return found
        await reader.assign(partitions)
        by_time = await reader.offsets_at(since)
        starts = {
            tp: known[(tp.topic, tp.partition)] + 1
            if (tp.topic, tp.partition) in known
            else by_time[tp]
            for tp in partitions
        }
        reader.seek(starts)
        for tp in partitions:
            for record in await reader.rest(tp):
                for key, value in record.headers:
                    if key == "ce_id" and value is not None:
                        ce_id = value.decode("utf-8", "replace")
                        if ce_id in wanted:
                            found[ce_id] = (tp, record.offset)
    return found
