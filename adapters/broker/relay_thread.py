"""The outbox relay on an event loop of its own, in a thread of its own.

On the hub's event loop every step of the relay (its wake-up, the producer's linger timer,
sending the produce request, reading the broker's answer, resolving the sends, the next
pass) waited behind whatever else was ready there, and the consumers' transactions take
30-60 ms each at 1,000 consents/s (up to 64 records apiece). aiokafka keeps one produce
request in flight per broker, so a relay pass took a handful of such waits: from the
commit of a release until the bench read it took 27-790 ms (median of a latency round;
bench, the latency split at the commit). In a thread of its own each step waits at most
for the interpreter's switch interval (5 ms) to get the GIL: 17-35 ms, the same hour.

`OutboxRelay` itself is unchanged (its tests drive it on one loop); `RelayThread` runs it
and is what the hub holds: the same calls, made from the hub's loop (or, `wake`, from any
thread). The relay's store work runs in this thread too, on a connection of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from adapters.broker.outbox import OutboxRelay

T = TypeVar("T")


class RelayThread:
    def __init__(self, make: Callable[[], OutboxRelay], *, name: str = "schakel-relay") -> None:
        """`make` builds the relay; it is called on the relay's own loop, since aiokafka
        binds a producer to the loop it is created on."""
        self._make = make
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._relay: OutboxRelay | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    async def _there(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the relay's loop and wait for it here (cancelling this wait
        cancels it there)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    @property
    def relay(self) -> OutboxRelay:
        if self._relay is None:
            raise RuntimeError("the outbox relay has not started")
        return self._relay

    @property
    def holds_lock(self) -> bool:
        return self._relay is not None and self._relay.holds_lock

    @property
    def published_total(self) -> int:
        return 0 if self._relay is None else self._relay.published_total

    @property
    def reconciled_total(self) -> int:
        return 0 if self._relay is None else self._relay.reconciled_total

    async def start(self) -> None:
        self._thread.start()

        async def build() -> None:
            relay = self._make()
            await relay.start()
            self._relay = relay

        try:
            await self._there(build())
        except BaseException:
            await self._halt()
            raise

    def wake(self) -> None:
        """A commit left rows to publish. From any thread; before the relay started and
        after it stopped it does nothing (a starting relay reads what is pending anyway)."""
        relay = self._relay
        if relay is None or not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: stopped
            self._loop.call_soon_threadsafe(relay.wake)

    async def publish_pending(self) -> int:
        return await self._there(self.relay.publish_pending())

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """As `OutboxRelay.stop`, then the thread ends."""
        try:
            if self._relay is not None and self._thread.is_alive():
                await self._there(self._relay.stop(drain_timeout))
        finally:
            await self._halt()

    async def _halt(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)

    async def release_lock(self) -> None:
        await self._there(self.relay.release_lock())

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No pass runs inside (`OutboxRelay.paused`, held on the relay's loop until the
        block ends)."""
        relay = self.relay
        inside: concurrent.futures.Future[None] = concurrent.futures.Future()
        leave: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def hold() -> None:
            async with relay.paused():
                inside.set_result(None)
                await asyncio.wrap_future(leave)

        held = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(hold(), self._loop))
        entered = asyncio.wrap_future(inside)
        try:
            await asyncio.wait({held, entered}, return_when=asyncio.FIRST_COMPLETED)
            if not entered.done():
                entered.cancel()
                await held  # raises why it could not pause
            yield
        finally:
            if not leave.done():
                leave.set_result(None)
            await held

    async def replace_producer(self, make: Callable[[], AIOKafkaProducer]) -> None:
        """As `OutboxRelay.replace_producer`, with a producer `make` builds on the relay's
        loop. Call inside `paused()`."""
        relay = self.relay

        async def replace() -> None:
            await relay.replace_producer(make())

        await self._there(replace())
