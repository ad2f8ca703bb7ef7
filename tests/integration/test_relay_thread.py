"""The hub's outbox relay runs on an event loop of its own, in a thread of its own
(`RelayThread`): woken from any thread, paused and resumed from the hub's loop, its
producer replaced on its own loop, and gone when it stops."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from adapters.broker.outbox import OutboxRelay, make_producer
from adapters.broker.relay_thread import RelayThread
from adapters.storage.store import Store
from schemas.messages import OutboundMessage
from tests.integration.helpers import TopicReader, relay_topic_and_store


def _message(topic: str, i: int) -> OutboundMessage:
    return OutboundMessage(
        f"rt-{i}", topic, f"VERW-{i % 3}".encode(), f"body {i}".encode(), (("ce_id", b"x"),)
    )


async def test_the_relay_publishes_from_its_own_thread_and_pauses_for_the_hub(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, store = await relay_topic_and_store(kafka_bootstrap, tmp_path)
    loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []

    def make() -> OutboxRelay:
        loops.append((asyncio.get_running_loop(), threading.current_thread()))
        return OutboxRelay(
            store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap
        )

    relay = RelayThread(make)
    relay.wake()  # before it started: nothing to wake, no error
    await relay.start()
    try:
        assert loops[0][0] is not asyncio.get_running_loop()
        assert loops[0][1] is not threading.current_thread()

        async with TopicReader(kafka_bootstrap, topic) as reader:
            # A commit in another thread wakes it (as the API's store writes do).
            store.run(lambda tx: tx.add_outbox(_message(topic, 0)))
            waker = threading.Thread(target=relay.wake)
            waker.start()
            waker.join()
            first = await reader.read(1)
            assert [r.value for r in first] == [b"body 0"]

            async with relay.paused():
                assert relay.relay._lock.locked()  # no pass can run on its loop meanwhile
                store.run(lambda tx: tx.add_outbox(_message(topic, 1)))
                await relay.replace_producer(lambda: make_producer(kafka_bootstrap, 1_048_576))
                relay.wake()
            # resumed, with the new producer (built on the relay's loop, or it could not send)
            second = await reader.read(1)
            assert [r.value for r in second] == [b"body 1"]
        assert relay.published_total == 2
        assert store.pending_outbox() == []
    finally:
        await relay.stop()
        store.dispose()
    assert not loops[0][1].is_alive()
    relay.wake()  # after it stopped: nothing to wake, no error


async def test_a_relay_that_cannot_start_says_so_and_leaves_no_thread(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    store.migrate()
    threads: list[threading.Thread] = []

    def make() -> OutboxRelay:
        threads.append(threading.current_thread())
        raise RuntimeError("no producer for you")

    relay = RelayThread(make)
    with pytest.raises(RuntimeError, match="no producer for you"):
        await relay.start()
    assert threads and not threads[0].is_alive()
    with pytest.raises(RuntimeError, match="has not started"):
        await relay.publish_pending()
    await relay.stop()  # nothing to stop: no error
    store.dispose()
