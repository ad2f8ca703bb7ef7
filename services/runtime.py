"""What every service handler is given: settings, participants, store, topics, clock,
and the in-process event fan-out (for the demo and for tests that await outcomes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from adapters.broker.outbox import OutboxRelay
from adapters.storage.store import Store
from schemas.messages import InboundRecord
from schemas.participants import Participants
from schemas.registration import HubEvent
from schemas.topics import Topics
from services.metrics import HubMetrics
from services.settings import HubSettings

E = TypeVar("E")


class Observers:
    """Fan-out of committed hub events to in-process listeners. Never blocks handlers."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[HubEvent]] = []

    def subscribe(self) -> asyncio.Queue[HubEvent]:
        queue: asyncio.Queue[HubEvent] = asyncio.Queue()
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[HubEvent]) -> None:
        if queue in self._queues:
            self._queues.remove(queue)

    @staticmethod
    async def next(
        queue: asyncio.Queue[HubEvent], kind: type[E], timeout: float, **match: Any
    ) -> E:
        """The next event of `kind` whose fields equal `match`; TimeoutError after `timeout`."""

        async def wait() -> E:
            while True:
                event = await queue.get()
                if isinstance(event, kind) and all(
                    getattr(event, k) == v for k, v in match.items()
                ):
                    return event

        return await asyncio.wait_for(wait(), timeout)

    def emit(self, events: list[HubEvent]) -> None:
        for queue in self._queues:
            for event in events:
                queue.put_nowait(event)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Hub:
    settings: HubSettings
    participants: Participants
    store: Store
    topics: Topics
    clock: Callable[[], datetime] = utc_now
    observers: Observers = field(default_factory=Observers)
    metrics: HubMetrics = field(default_factory=HubMetrics)
    """This hub's own Prometheus registry and instruments (`services.metrics`)."""
    relay: OutboxRelay | None = None
    log_order: bool = True
    """Record the order records are applied in (replay follows it; a replay does not log)."""
    before_apply: Callable[[Any, InboundRecord], None] | None = None
    """Called with the transaction before each record is applied (the replay sets its clock
    to the record's time, and runs the timer for what fell due before it)."""

    def committed(self, events: list[HubEvent]) -> None:
        """After a transaction committed: wake the relay, count, tell the listeners."""
        if self.relay is not None:
            self.relay.wake()
        self.metrics.count(events, self.topics)
        self.observers.emit(events)
