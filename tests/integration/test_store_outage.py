"""A PostgreSQL outage of tens of seconds (issue #8): the hub keeps its offsets, retries
with bounded backoff, and processes the backlog once the database is back; nothing is
lost and nothing is dead-lettered for it. The outage is a loopback TCP proxy between hub
and PostgreSQL that the test cuts and restores."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from sqlalchemy.engine import make_url

from schemas.registration import MessageDeadLettered, ReferralReleased
from tests.integration.helpers import (
    gather_events,
    running,
    send_consent,
    send_referral,
    settings_for,
    unique_prefix,
)

OUTAGE_SECONDS = 20
BACKLOG = 15


class Cuttable:
    """A TCP proxy to PostgreSQL that can be cut (all connections dropped, new ones refused).
    It runs its own event loop in a thread: the hub's store calls are blocking and would
    otherwise wait on a proxy that cannot run."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def open(self) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._open(), self.loop))

    async def cut(self) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._cut(), self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for link in list(self.links):
            link.close()
        self.links.clear()


async def test_backlog_is_processed_after_a_database_outage(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    url = make_url(postgres_url)
    proxy = Cuttable(url.host or "127.0.0.1", url.port or 5432)
    await proxy.open()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    async with running(settings_for(kafka_bootstrap, proxied, unique_prefix())) as hub:
        events = hub.hub.observers.subscribe()
        await send_consent(hub, "c-O-0", "VERW-O-0")
        await send_referral(hub, "VERW-O-0")
        await gather_events(events, lambda seen: any(isinstance(e, ReferralReleased) for e in seen))

        await proxy.cut()
        for i in range(1, BACKLOG + 1):
            await send_consent(hub, f"c-O-{i}", f"VERW-O-{i}")
            await send_referral(hub, f"VERW-O-{i}")
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself lasts this long
        await proxy.open()

        seen = await gather_events(
            events,
            lambda seen: (
                len({e.referral_id for e in seen if isinstance(e, ReferralReleased)}) == BACKLOG
            ),
            timeout=90,
        )
        assert not [e for e in seen if isinstance(e, MessageDeadLettered)], (
            "an outage is not bad input"
        )
        assert hub.hub.store.count("releases") == BACKLOG + 1
        await hub.relay.publish_pending()
        assert not hub.hub.store.pending_outbox(1)
    await proxy.cut()
    proxy.close()
