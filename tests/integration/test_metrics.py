"""Issue #10: `/metrics` on a running hub (real broker, real store), and the consumer lag
measured from a real broker's offsets."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from adapters.broker.admin import TopicSpec, delete_topics, ensure_topics
from adapters.broker.lag import consumer_lag
from adapters.broker.outbox import make_producer
from schemas import topics as names
from schemas.messages import OutboundMessage
from schemas.registration import (
    ContactOverdue,
    FeedbackForwarded,
    MessageDeadLettered,
    ReferralReleased,
)
from services.demo.samples import DEMO_BSN
from tests.integration.helpers import (
    TIMEOUT,
    FakeClock,
    TopicReader,
    gather_events,
    next_event,
    running,
    send,
    send_consent,
    send_feedback,
    send_referral,
    settings_for,
    unique_prefix,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PATIENT_2 = "999900031"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_consumer_lag_counts_from_committed_offsets_and_is_never_negative(
    kafka_bootstrap: str,
) -> None:
    topic, group = f"t-{uuid.uuid4().hex[:12]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2)])
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    committer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await producer.start()
    await committer.start()
    try:
        # One record per batch: end offsets are exact on every broker.
        for i in range(5):
            await producer.send_and_wait(topic, b"%d" % i, partition=0)
        for i in range(2):
            await producer.send_and_wait(topic, b"%d" % i, partition=1)
        committer.assign([p0, p1])
        await committer.commit({p0: 2})

        lags = {
            (g.topic, g.group): g
            for g in await consumer_lag(kafka_bootstrap, [(topic, group), (topic, "never-ran")])
        }
        assert lags[(topic, group)].lag == 3 + 2, "p1 never committed: counted from its start"
        assert lags[(topic, group)].committed == 2
        assert lags[(topic, "never-ran")].lag == 7
        assert lags[(topic, "never-ran")].committed == 0

        await committer.commit({p0: 5, p1: 2})
        (caught_up,) = await consumer_lag(kafka_bootstrap, [(topic, group)])
        assert (caught_up.lag, caught_up.committed) == (0, 7)

        # Ten records in one batch: the embedded broker's end offset then reads low (it
        # answers the last batch's base offset + 1), so the committed offset is past it.
        sends = [await producer.send(topic, b"b", partition=1) for _ in range(10)]
        await asyncio.gather(*sends)
        await committer.commit({p1: 12})
        (batched,) = await consumer_lag(kafka_bootstrap, [(topic, group)])
        assert batched.committed == 17
        assert batched.lag == 0, "clamped at 0 per partition, never negative"

        assert await consumer_lag(kafka_bootstrap, [(f"{topic}-absent", group)]) == []
    finally:
        await committer.stop()
        await producer.stop()
        await delete_topics(kafka_bootstrap, [topic])


async def test_metrics_show_what_the_hub_did(kafka_bootstrap: str, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    async with running(settings, clock) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        # VERW-M-1: welfare and municipality; VERW-M-2: welfare only, then contact reported.
        await send_consent(hub, "c-M-1", "VERW-M-1", municipality_cbs=("0118",))
        await send_referral(hub, "VERW-M-1")
        await send_consent(hub, "c-M-2", "VERW-M-2", bsn=PATIENT_2)
        await send_referral(hub, "VERW-M-2", bsn=PATIENT_2, given="Bram", family="Bos")
        await gather_events(
            events, lambda seen: sum(isinstance(e, ReferralReleased) for e in seen) == 3
        )
        await send(
            kafka_bootstrap,
            topics.referral_created,
            b"{ not json",
            "k-bad",
            logical=names.REFERRAL_CREATED,
        )
        bad = await next_event(events, MessageDeadLettered)
        assert bad.reason == "invalid-json"
        await send_feedback(hub, "VERW-M-2", "contacted", organisation="welzijn-de-wolden")
        spoof = await next_event(events, MessageDeadLettered)
        assert spoof.reason == "not-authorised"
        await send_feedback(hub, "VERW-M-2", "contacted")
        await next_event(events, FeedbackForwarded, referral_id="VERW-M-2")
        clock.advance(timedelta(days=15))
        await hub.ticker.tick_now()
        await next_event(events, ContactOverdue, referral_id="VERW-M-1")
        await hub.relay.publish_pending()

        async with httpx.AsyncClient(base_url=hub.http_url or "", timeout=10) as client:
            sent = {
                names.REFERRAL_CREATED: 3,
                names.CONSENT_GRANTED: 2,
                names.CONSENT_WITHDRAWN: 0,
                names.FEEDBACK_RETURNED: 2,
            }

            async def caught_up() -> tuple[httpx.Response, Samples]:
                # The consumers commit just after their handlers return; no event says so.
                while True:
                    response = await client.get("/metrics")  # no token needed
                    samples = parse(response.text)
                    lags = [
                        value(
                            samples,
                            "schakel_consumer_lag",
                            topic=topics.name(t),
                            group=settings.group_id(service),
                        )
                        for t, service in (
                            (names.REFERRAL_CREATED, "intake"),
                            (names.CONSENT_GRANTED, "consent"),
                            (names.CONSENT_WITHDRAWN, "consent-withdrawn"),
                            (names.FEEDBACK_RETURNED, "feedback"),
                        )
                    ]
                    if lags == [0, 0, 0, 0]:
                        return response, samples
                    await asyncio.sleep(0.1)

            response, samples = await asyncio.wait_for(caught_up(), TIMEOUT)

        committed = {
            g.topic: g.committed
            for g in await consumer_lag(kafka_bootstrap, hub.hub.metrics.lag_source[1])  # type: ignore[index]
        }
        assert committed == {topics.name(t): n for t, n in sent.items()}, (
            "lag 0 because every record sent was committed"
        )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "VERW-M" not in response.text and DEMO_BSN not in response.text
    assert PATIENT_2 not in response.text
    assert value(samples, "schakel_consumer_lag_check_success") == 1
    assert value(samples, "schakel_releases_total", recipient_kind="welfare") == 2
    assert value(samples, "schakel_releases_total", recipient_kind="municipality") == 1
    assert value(samples, "schakel_referrals_received_total") == 2
    assert (
        value(
            samples, "schakel_dead_letters_total", reason="invalid-json", topic="referral-created"
        )
        == 1
    )
    assert (
        value(
            samples,
            "schakel_dead_letters_total",
            reason="not-authorised",
            topic="feedback-returned",
        )
        == 1
    )
    assert value(samples, "schakel_feedback_forwarded_total", status="contacted") == 1
    assert value(samples, "schakel_overdue_notices_total") == 1
    assert value(samples, "schakel_overdue_registrations") == 1, "VERW-M-2 had contact"
    assert value(samples, "schakel_outbox_pending") == 0
    for topic, count in sent.items():
        if count:
            assert value(samples, "schakel_records_processed_total", topic=topic) == count
            assert value(samples, "schakel_record_latency_seconds_count", topic=topic) == count
            batches = value(samples, "schakel_handler_batch_seconds_count", topic=topic)
            assert batches is not None and 1 <= batches <= count


async def test_a_message_the_broker_refuses_as_too_large_is_counted_and_the_rest_go(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The broker will not take it as it is configured: it is marked refused (logged with
    how to send it again), counted, listed, and the messages after it in its partition still
    go; queued again once the topic takes it, it goes."""
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    async with running(settings) as hub:
        topic = hub.hub.topics.dead_letter
        big, small = (
            OutboundMessage(f"id-{name}", topic, b"VERW-TL-1", body, (("ce_id", name.encode()),))
            for name, body in (("big", b"x" * 8192), ("small", b"{}"))
        )
        async with hub.relay.paused():  # a producer that takes at most 4 KiB a request
            await hub.relay.replace_producer(make_producer(kafka_bootstrap, 4096))
        hub.hub.store.run(lambda tx: (tx.add_outbox(big), tx.add_outbox(small)))
        await hub.relay.publish_pending()
        async with httpx.AsyncClient(base_url=hub.http_url or "", timeout=10) as client:
            samples = parse((await client.get("/metrics")).text)
            async with TopicReader(kafka_bootstrap, topic) as reader:
                sent = [dict(r.headers)["ce_id"] for r in await reader.everything()]
            pending = hub.hub.store.pending_outbox()
            refused = [m.message_id for m in hub.hub.store.refused_outbox()]

            async with hub.relay.paused():  # the topic takes it now
                await hub.relay.replace_producer(make_producer(kafka_bootstrap, 1_048_576))
            assert hub.hub.store.requeue_published(None, topic, refused=True) == (1, 0)
            await hub.relay.publish_pending()
            after = parse((await client.get("/metrics")).text)
            async with TopicReader(kafka_bootstrap, topic) as reader:
                sent_after = [dict(r.headers)["ce_id"] for r in await reader.everything()]
    assert value(samples, "schakel_outbox_refused_too_large_total") == 1
    assert value(samples, "schakel_outbox_refused_unsent") == 1
    assert sent == [b"small"], "the one after it in its partition was sent"
    assert pending == [], "the refused one is not retried for ever"
    assert refused == ["id-big"]
    assert sent_after == [b"small", b"big"]
    assert value(after, "schakel_outbox_refused_unsent") == 0


async def test_a_hub_starting_names_the_refused_messages_still_unsent(
    kafka_bootstrap: str, tmp_path: Path, log_capture: io.StringIO
) -> None:
    from adapters.storage.store import Store

    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    store = Store(settings.database_url)
    store.migrate()
    store.run(lambda tx: tx.add_outbox(OutboundMessage("id-big", "t", b"k", b"x" * 10, ())))
    [row] = store.pending_outbox()
    store.mark_published([(row.id, None, None)], refused={row.id})
    store.dispose()
    async with running(settings) as hub:
        async with httpx.AsyncClient(base_url=hub.http_url or "", timeout=10) as client:
            samples = parse((await client.get("/metrics")).text)
    [line] = [orjson.loads(x) for x in log_capture.getvalue().splitlines() if "still unsent" in x]
    assert (line["level"], line["messages"]) == ("warning", 1)
    assert "schakel outbox requeue --refused" in line["event"]
    assert value(samples, "schakel_outbox_refused_unsent") == 1
