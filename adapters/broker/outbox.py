"""The outbox relay: publishes what handlers committed to the store's outbox.

Handlers never publish; they write outbound messages in the transaction that changed
state. The relay sends pending rows in id order (per topic-partition order follows), with
records sharing batches, and marks them published once the broker acknowledged them.
A crash between acknowledgement and marking re-sends those rows with the same ce_id
(at-least-once; consumers dedupe by ce_id).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from adapters.logging import get_logger
from adapters.storage.store import OutboxRow, Store

log = get_logger("schakel.outbox")

BATCH_ROWS = 500
IDLE_POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 10.0


def make_producer(bootstrap: str, max_request_size: int) -> AIOKafkaProducer:
    """acks=all; no idempotence (the embedded broker refuses InitProducerId, BROKER.md §3),
    so duplicates are handled by deterministic ids instead."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_request_size=max_request_size,
        client_id="schakel-outbox",
    )


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        *,
        on_published: Callable[[list[OutboxRow]], None] | None = None,
    ) -> None:
        self.store = store
        self.producer = producer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_published = on_published
        self.published_total = 0
        # One publisher at a time: two passes over the same pending rows would send them twice.
        self._lock = asyncio.Lock()

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

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                sent = await self.publish_pending()
                backoff = 0.1
            except (KafkaError, OSError) as exc:
                log.warning(
                    "outbox publish failed, will retry",
                    error=type(exc).__name__,
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            except Exception:
                log.exception("outbox relay error, will retry")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            if self._stopping and sent == 0:
                return
            if sent == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)

    async def publish_pending(self) -> int:
        """Publish every pending row; returns how many were marked published."""
        async with self._lock:
            return await self._publish_pending()

    async def _publish_pending(self) -> int:
        total = 0
        while True:
            rows = await asyncio.to_thread(self.store.pending_outbox, BATCH_ROWS)
            if not rows:
                return total
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
            done: list[OutboxRow] = []
            failure: BaseException | None = None
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, MessageSizeTooLargeError):
                    # Permanent: the broker will never take it. Say so; do not block the rest.
                    log.error(
                        "outbound message refused as too large; not sent",
                        message_id=row.message.message_id,
                        topic=row.message.topic,
                    )
                    done.append(row)
                elif isinstance(result, BaseException):
                    failure = failure or result
                else:
                    done.append(row)
            await asyncio.to_thread(self.store.mark_published, [r.id for r in done])
            total += len(done)
            self.published_total += len(done)
            if self._on_published is not None and done:
                self._on_published(done)
            if failure is not None:
                raise failure
