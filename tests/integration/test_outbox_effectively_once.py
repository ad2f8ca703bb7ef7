"""The outbox relay sends each message once even when it crashed between the broker's
acknowledgement and marking the row (issue #8)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from adapters.broker.client import Sender
from adapters.broker.outbox import OutboxRelay, make_producer
from schemas.messages import OutboundMessage
from tests.conftest import HeldWriteLock, LoopTurns
from tests.integration.helpers import TopicReader, relay_topic_and_store


def _message(topic: str, i: int) -> OutboundMessage:
    """Outbound message number `i`: four keys, so several partitions and an order each."""
    return OutboundMessage(
        f"id-{i}",
        topic,
        f"VERW-{i % 4}".encode(),
        f"body {i}".encode(),
        (("ce_id", f"id-{i}".encode()),),
    )


async def test_acknowledged_but_unmarked_rows_are_not_sent_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, store = await relay_topic_and_store(kafka_bootstrap, tmp_path)
    messages = [_message(topic, i) for i in range(12)]
    for message in messages:
        store.run(lambda tx, m=message: tx.add_outbox(m))

    first = OutboxRelay(store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap)
    await first.producer.start()
    await first.publish_pending()  # a normal pass: all sent, marked with their offsets
    await first.producer.stop()
    await first.release_lock()  # as when its process dies
    # Later messages: the broker took some, then the hub died before marking them.
    later = [_message(topic, i) for i in range(12, 20)]
    for message in later:
        store.run(lambda tx, m=message: tx.add_outbox(m))
    async with Sender(kafka_bootstrap) as sender:
        for message in later[:5]:
            await sender.send(topic, message.value, key=message.key, headers=message.headers)

    restarted = OutboxRelay(
        store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap
    )
    await restarted.producer.start()
    sent = await restarted.publish_pending()
    await restarted.producer.stop()
    assert restarted.reconciled_total == 5, "found on the broker, marked, not re-sent"
    assert sent == 3
    assert store.pending_outbox() == []

    async with TopicReader(kafka_bootstrap, topic) as reader:
        on_topic = Counter(dict(r.headers)["ce_id"].decode() for r in await reader.everything())
    assert set(on_topic) == {m.message_id for m in messages + later}, "none lost"
    assert max(on_topic.values()) == 1, f"duplicates: {[k for k, v in on_topic.items() if v > 1]}"
    store.dispose()


async def test_rows_another_instances_recovery_handed_back_are_looked_for_before_sending(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With several instances on one store, each one's watch recovers from the broker's
    loss on its own (`Store.broker_lost`). One that notices the loss late hands back rows
    the relaying instance has already sent to the new broker: the relay finds those on
    their topic and marks them, and sends only what is not there."""
    from datetime import UTC, datetime

    topic, store = await relay_topic_and_store(kafka_bootstrap, tmp_path)
    relay = OutboxRelay(store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap)
    await relay.producer.start()
    on_new_broker = [_message(topic, i) for i in range(6)]
    store.run(lambda tx: [tx.add_outbox(m) for m in on_new_broker])
    assert await relay.publish_pending() == 6  # the relaying instance, after its recovery
    gone = [_message(topic, i) for i in range(6, 8)]  # acknowledged by a broker now gone
    store.run(lambda tx: [tx.add_outbox(m) for m in gone])
    store.mark_published([(row.id, None, None) for row in store.pending_outbox()])

    loss = store.broker_lost(datetime(2026, 1, 1, tzinfo=UTC))  # the late instance
    assert loss.requeued == {topic: 8}
    store.run(lambda tx: tx.add_outbox(_message(topic, 8)))
    sent = await relay.publish_pending()
    await relay.producer.stop()

    assert relay.reconciled_total == 6, "found on the new broker, marked, not sent again"
    assert sent == 3
    assert store.pending_outbox() == []
    async with TopicReader(kafka_bootstrap, topic) as reader:
        on_topic = Counter(dict(r.headers)["ce_id"].decode() for r in await reader.everything())
    assert on_topic == Counter({f"id-{i}": 1 for i in range(9)})
    store.dispose()


async def test_rows_handed_back_between_a_send_and_its_mark_are_found_below_it(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The late recovery commits while the relay has sent rows it has not marked yet: those
    marks land above the handed-back rows' offsets, so the check reads the topic by time,
    not from the highest offset known (found in a final read: all six went out twice)."""
    from datetime import UTC, datetime

    topic, store = await relay_topic_and_store(kafka_bootstrap, tmp_path)
    relay = OutboxRelay(store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap)
    await relay.producer.start()

    def one_key(i: int) -> OutboundMessage:  # one partition: later marks land above
        return OutboundMessage(
            f"id-{i}", topic, b"VERW-0", f"body {i}".encode(), (("ce_id", f"id-{i}".encode()),)
        )

    store.run(lambda tx: [tx.add_outbox(one_key(i)) for i in range(6)])
    assert await relay.publish_pending() == 6
    store.run(lambda tx: [tx.add_outbox(one_key(i)) for i in (6, 7)])
    mark, losses = store.mark_published, []

    def late_recovery_then_mark(sent, **kw):  # type: ignore[no-untyped-def]
        if not losses:  # another instance's recovery commits between the ack and the mark
            losses.append(store.broker_lost(datetime(2026, 1, 1, tzinfo=UTC)))
        mark(sent, **kw)

    monkeypatch.setattr(store, "mark_published", late_recovery_then_mark)
    await relay.publish_pending()  # sends 6 and 7; the recovery hands back 0-5; marks 6, 7
    assert losses[0].requeued == {topic: 6}
    await relay.publish_pending()  # the check of what was handed back
    await relay.producer.stop()

    assert relay.reconciled_total == 6
    async with TopicReader(kafka_bootstrap, topic) as reader:
        on_topic = Counter(dict(r.headers)["ce_id"].decode() for r in await reader.everything())
    assert on_topic == Counter({f"id-{i}": 1 for i in range(8)})
    store.dispose()


async def test_a_store_locked_by_another_writer_delays_the_marking_not_the_event_loop(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay reads and marks on the event loop, waiting for no lock. With the store's
    write lock held elsewhere, marking takes a worker thread (and waits there), the loop
    stays free meanwhile, and every message is on the topic once and marked."""
    import asyncio
    import threading

    timeout = 30.0  # generous: on a correct relay each wait ends soon after its cause
    topic, store = await relay_topic_and_store(kafka_bootstrap, tmp_path)
    relay = OutboxRelay(store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap)
    await relay.producer.start()
    store.run(lambda tx: tx.add_outbox(_message(topic, 0)))
    assert await relay.publish_pending() == 1  # the first pass's check and the topic's metadata
    messages = [_message(topic, i) for i in range(1, 7)]
    store.run(lambda tx: [tx.add_outbox(m) for m in messages])

    loop = asyncio.get_running_loop()
    main = threading.current_thread()
    marks: list[tuple[threading.Thread, bool]] = []  # (thread, quick) of each marking begun
    marked: list[threading.Thread] = []  # ... and of each that wrote its marks
    marking_off_loop = asyncio.Event()
    mark = store.mark_published

    def spying_mark(sent, *, quick=False, **kw):  # type: ignore[no-untyped-def]
        marks.append((threading.current_thread(), quick))
        if not quick:
            loop.call_soon_threadsafe(marking_off_loop.set)
        mark(sent, quick=quick, **kw)
        marked.append(threading.current_thread())

    monkeypatch.setattr(store, "mark_published", spying_mark)
    lock = HeldWriteLock(tmp_path / "outbox.db", timeout)  # another writer holds it
    turns = LoopTurns()
    publishing = asyncio.create_task(relay.publish_pending())
    try:
        async with TopicReader(kafka_bootstrap, topic) as reader:
            await asyncio.wait_for(reader.read(1 + len(messages)), timeout)  # sent, acked ...
            await asyncio.wait_for(marking_off_loop.wait(), timeout)
            assert marks == [(main, True), (marks[-1][0], False)], marks
            assert marks[-1][0] is not main, "marking waits for the lock on the event loop"
            assert relay._off_loop_until > 0, "the relay fell back to a worker thread"
            before = turns.count
            await asyncio.wait_for(turns.wait(50), timeout)  # the loop runs on ...
            assert turns.count >= before + 50
            assert not publishing.done() and marked == [], "... but not marked while locked"
            lock.release("event loop")
            sent = await asyncio.wait_for(publishing, timeout)
            on_topic = Counter(
                dict(r.headers)["ce_id"].decode()
                for r in await asyncio.wait_for(reader.everything(), timeout)
            )
    finally:
        turns.stop()
        publishing.cancel()  # no-op once done
        lock.close()
        await relay.producer.stop()
    assert lock.released_by == ["event loop"], "the event loop let the other writer go"
    assert marked == [marks[-1][0]], "marked once, in the worker thread, after the lock"
    assert sent == 6
    assert store.pending_outbox() == []
    assert on_topic == Counter({f"id-{i}": 1 for i in range(7)})
    store.dispose()


async def test_marks_are_written_together_and_acknowledged_rows_are_not_sent_again(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a stream of small commits the relay sends each as it comes and marks what the
    broker acknowledged together (one store transaction per `MARK_EVERY_SECONDS`, not per
    pass), reading past acknowledged rows meanwhile: each message once on the topic, all
    marked when it stops."""

    from adapters.broker import outbox

    monkeypatch.setattr(outbox, "MARK_EVERY_SECONDS", 0.5)
    topic, store = await relay_topic_and_store(kafka_bootstrap, tmp_path)
    relay = OutboxRelay(store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap)
    marks: list[int] = []
    mark = store.mark_published
    monkeypatch.setattr(
        store, "mark_published", lambda sent, **kw: (marks.append(len(sent)), mark(sent, **kw))
    )
    await relay.start()
    waves = 12
    async with TopicReader(kafka_bootstrap, topic) as reader:
        for wave in range(waves):
            store.run(
                lambda tx, w=wave: [tx.add_outbox(_message(topic, 3 * w + i)) for i in range(3)]
            )
            relay.wake()
            await reader.read(3)  # sent before the next wave is committed
        await relay.stop()
        on_topic = Counter(dict(r.headers)["ce_id"].decode() for r in await reader.everything())
    assert on_topic == Counter({f"id-{i}": 1 for i in range(3 * waves)})
    assert store.pending_outbox() == []
    assert sum(marks) == 3 * waves
    assert len(marks) < waves / 2, f"marked in {len(marks)} transactions for {waves} passes"
    store.dispose()
