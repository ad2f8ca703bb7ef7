"""Notices that the broker lost its state, and says so.

The embedded broker keeps everything in memory: after a restart every topic, record and
committed offset is gone, and it re-creates any topic a client asks about with 4
partitions (BROKER.md §1, §6), so the hub's own topics reappear as soon as its consumers
look for them. Only the hub ever names its marker topic (`hub-epoch`, one record written
at start-up): the marker missing from the broker's topic list means the broker lost its
state. Apache Kafka does not lose topics on a restart; there the watch simply never fires
(unless someone deletes the marker topic, which makes the hub re-check and re-create).

When the hub started the embedded broker itself, the watch also restarts it if its
process ended, on the same port, so clients reconnect to the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from uuid import uuid4

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from adapters.broker.cloudevents import ce_headers, continue_trace
from adapters.broker.embedded import EmbeddedBroker
from adapters.logging import get_logger
from schemas.topics import CE_HUB_EPOCH

log = get_logger("schakel.broker-watch")


class BrokerWatch:
    def __init__(
        self,
        bootstrap: str,
        marker_topic: str,
        *,
        on_lost: Callable[[datetime], Awaitable[None]] | None = None,
        interval_seconds: float = 2.0,
        embedded: EmbeddedBroker | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bootstrap = bootstrap
        self.marker_topic = marker_topic
        self.interval = interval_seconds
        self.embedded = embedded
        self.on_lost = on_lost
        """What recovers: called with the last moment the broker was seen intact."""
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._unreachable_since: datetime | None = None
        self.last_good: datetime = clock()
        self.recoveries = 0
        self._unfinished: datetime | None = None
        """The `last_good` of a recovery that failed: finished on the next check, whether
        or not the marker is back (another instance may have written it)."""
        self.recovered = asyncio.Event()
        """Set after each recovery (tests and operators can await it)."""

    async def mark(self) -> None:
        """Write the marker record (the topic must exist: the hub creates it explicitly)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", client_id="schakel-watch"
        )
        await producer.start()
        try:
            now = self._clock()
            marker = {"host": socket.gethostname(), "pid": os.getpid(), "at": _iso(now)}
            headers = ce_headers(  # like every message the hub writes (CONTRACT §2)
                ce_id=str(uuid4()),
                ce_type=CE_HUB_EPOCH,
                time=now,
                traceparent=continue_trace(None),
            )
            await producer.send_and_wait(
                self.marker_topic, orjson.dumps(marker), headers=list(headers)
            )
        finally:
            await producer.stop()
        self.last_good = self._clock()

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="schakel-broker-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        admin: AIOKafkaAdminClient | None = None
        try:
            while True:
                await asyncio.sleep(self.interval)
                if self.embedded is not None and self.embedded.exited:
                    await self._restart_embedded()
                try:
                    if admin is None:
                        admin = _admin(self.bootstrap)
                        await asyncio.wait_for(admin.start(), 10)
                    topics = await asyncio.wait_for(admin.list_topics(), 10)
                except (KafkaError, OSError, TimeoutError) as exc:
                    self._unreachable(exc)
                    if admin is not None:
                        with contextlib.suppress(Exception):
                            await admin.close()
                    admin = None
                    continue
                if self._unreachable_since is not None:
                    log.warning("broker answers again", bootstrap=self.bootstrap)
                    self._unreachable_since = None
                if self._unfinished is not None:
                    await self._lost(self._unfinished)
                    continue
                if self.marker_topic in topics:
                    self.last_good = self._clock()
                    continue
                await self._lost(self.last_good)
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    await admin.close()

    async def _restart_embedded(self) -> None:
        assert self.embedded is not None
        proc = self.embedded.proc
        log.error(
            "the embedded broker process ended; starting it again on the same port. "
            "It keeps nothing: every topic, record and committed offset is gone",
            status=proc.returncode if proc is not None else None,
            bootstrap=self.bootstrap,
        )
        try:
            await asyncio.to_thread(self.embedded.restart)
        except Exception as exc:  # noqa: BLE001 - retried on the next check
            log.error("the embedded broker did not start again; retrying", error=str(exc))

    def _unreachable(self, exc: BaseException) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = self._clock()
            log.warning(
                "broker unreachable; the hub waits for it",
                bootstrap=self.bootstrap,
                error=type(exc).__name__,
            )

    async def _lost(self, last_good: datetime) -> None:
        log.error(
            "the broker lost its state (the hub's marker topic is gone): recovering",
            bootstrap=self.bootstrap,
            marker_topic=self.marker_topic,
            last_seen_intact=_iso(last_good),
        )
        try:
            if self.on_lost is None:
                raise RuntimeError("nothing to recover with yet")
            await self.on_lost(last_good)
            await self.mark()
        except Exception:
            # Its consumers may be stopped already: it must be finished even when another
            # instance has written the marker again meanwhile.
            self._unfinished = last_good
            log.exception("recovery from the broker's loss failed; retrying on the next check")
            return
        self._unfinished = None
        self.recoveries += 1
        self.recovered.set()


def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=10_000, client_id="schakel-watch"
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
