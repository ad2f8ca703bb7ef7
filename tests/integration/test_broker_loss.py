"""The embedded broker loses everything when it restarts (BROKER.md §1). The hub notices,
re-creates its topics, rejoins, hands the outbox what may not have reached the old broker,
and reports what cannot be recovered (issue #8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.storage.store import Store
from schemas.messages import OutboundMessage
from services.demo.samples import fictional_bsn, referral_bundle, to_bytes
from services.hub import start_hub
from services.settings import DEMO_PARTICIPANTS, HubSettings
from tests.conftest import hub_on
from tests.integration.helpers import TopicReader, send_consent, send_referral, token, until

WELFARE = "welzijn-hoogeveen"


async def test_the_hub_recovers_when_its_embedded_broker_dies(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    settings = HubSettings(
        kafka_bootstrap_servers=None,  # the hub starts (and owns) the embedded broker
        database_url=db,
        participants=DEMO_PARTICIPANTS,
        topic_partitions=3,
        http_port=0,
        broker_watch_seconds=0.3,
        embedded_broker_log_dir=tmp_path,
    )
    running = await start_hub(settings)
    try:
        await running.wait_assigned(30)
        store = running.hub.store
        welfare_topic = running.hub.topics.welfare_referrals(WELFARE)
        await send_referral(running, "VERW-L-1", bsn=fictional_bsn(1))
        await send_consent(running, "c-L-1", "VERW-L-1", bsn=fictional_bsn(1))
        await until(
            lambda: store.count("releases") == 1 and not store.pending_outbox(1),
            what="the first release, published",
        )
        first_port = running.embedded.port  # type: ignore[union-attr]
        # let the watch see the broker intact after that publication, then kill it
        seen = running.watch.last_good  # type: ignore[union-attr]
        await until(lambda: running.watch.last_good > seen, what="a check after publishing")  # type: ignore[union-attr]
        running.embedded.proc.kill()  # type: ignore[union-attr]

        await until(lambda: running.watch.recoveries == 1, timeout=60, what="a recovery")  # type: ignore[union-attr]
        assert running.embedded.port == first_port  # type: ignore[union-attr]
        assert not running.embedded.exited  # type: ignore[union-attr]
        [loss] = running.losses
        lost = {entry.topic: entry.messages for entry in loss.lost}
        assert lost[welfare_topic] == 1  # the first release is gone with the old broker
        assert loss.requeued == {}  # nothing was published after the last intact check

        # the hub works on the new broker: topics exist again, the consumers joined, and
        # the FHIR facade publishes with a fresh producer
        async with httpx.AsyncClient(
            base_url=running.http_url or "",
            headers={"Authorization": f"Bearer {token('praktijk-de-linde')}"},
        ) as practice:
            posted = await practice.post(
                "/fhir/Bundle", content=to_bytes(referral_bundle("VERW-L-2", bsn=fictional_bsn(2)))
            )
        assert posted.status_code == 202, posted.text
        await send_consent(running, "c-L-2", "VERW-L-2", bsn=fictional_bsn(2))
        await until(
            lambda: store.count("releases") == 2 and not store.pending_outbox(1),
            timeout=30,
            what="the second release, published",
        )
        async with TopicReader(running.bootstrap, welfare_topic) as reader:
            records = await reader.everything()
        assert [r.key for r in records] == [b"VERW-L-2"]
    finally:
        await running.stop()


def test_broker_loss_resends_what_may_have_gone_to_the_new_broker(tmp_path: Path) -> None:
    """Acknowledgements after the last intact check may have come from the new, empty
    broker for topics it no longer had: those rows go back to the relay; older ones are
    reported lost; every stored offset (of the old broker) is forgotten."""
    now = [datetime(2026, 12, 1, 10, 0, tzinfo=UTC)]
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}", now=lambda: now[0])
    store.migrate()
    for i in range(4):
        store.run(
            lambda tx, i=i: tx.add_outbox(
                OutboundMessage(f"m-{i}", "welfare.x.referrals", b"k", b"v", ())
            )
        )
    rows = store.pending_outbox(10)
    for minute, row in enumerate(rows):
        now[0] = datetime(2026, 12, 1, 10, minute, tzinfo=UTC)
        store.mark_published([(row.id, 0, minute)])
    last_good = datetime(2026, 12, 1, 10, 2, tzinfo=UTC)

    loss = store.broker_lost(last_good)

    [lost] = loss.lost
    assert (lost.topic, lost.messages) == ("welfare.x.referrals", 2)
    assert lost.first_published.replace(tzinfo=UTC) == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert loss.requeued == {"welfare.x.referrals": 2}
    assert [r.message.message_id for r in store.pending_outbox(10)] == ["m-2", "m-3"]
    assert store.sent_positions(["welfare.x.referrals"]) == {}
    assert store.requeue_published(last_good - timedelta(hours=1)) == (2, 0)
    store.dispose()


def test_a_release_revoked_since_is_never_sent_again(tmp_path: Path) -> None:
    """After a withdrawal nothing more flows to that recipient: sending published messages
    again (`schakel outbox requeue`, or the recovery from a broker's loss) leaves out the
    releases and updates of a revoked release; its revoke notice goes again."""
    from itertools import count

    from schemas.messages import InboundRecord
    from schemas.topics import CE_REFERRAL_RELEASED, CE_REFERRAL_REVOKED
    from services.consent.handlers import consent_pipeline
    from services.demo.samples import consent_resource
    from services.intake.handlers import intake_pipeline
    from services.outputs import disclosure_topics

    hub = hub_on(f"sqlite:///{tmp_path / 'hub.db'}")
    store = hub.store
    offsets = count()

    def record(topic: str, key: str, value: bytes) -> list[InboundRecord]:
        return [InboundRecord(topic, 0, next(offsets), key.encode(), value, (), None)]

    started = datetime.now(UTC) - timedelta(minutes=1)
    for i in (1, 2):
        rid, bsn = f"VERW-RQ-{i}", fictional_bsn(10 + i)
        bundle = to_bytes(referral_bundle(rid, bsn=bsn))
        intake_pipeline(hub).process(record("referral-created", rid, bundle))
        consent = consent_resource(f"c-rq-{i}", referral_id=rid, bsn=bsn)
        consent_pipeline(hub).process(record("consent-granted", rid, to_bytes(consent)))
    store.mark_published([(row.id, 0, row.id) for row in store.pending_outbox(100)])
    withdrawal = consent_resource("c-rq-1", referral_id="VERW-RQ-1", bsn=fictional_bsn(11))
    withdrawal["status"] = "inactive"
    consent_pipeline(hub, withdrawn=True).process(
        record("consent-withdrawn", "VERW-RQ-1", to_bytes(withdrawal))
    )
    store.mark_published([(row.id, 0, row.id) for row in store.pending_outbox(100)])
    welfare = hub.topics.welfare_referrals(WELFARE)

    again, withheld = store.requeue_published(started, welfare, disclosure_topics(hub))

    pending = [
        (r.message.key, dict(r.message.headers)["ce_type"].decode())
        for r in store.pending_outbox(100)
    ]
    assert sorted(pending) == [
        (b"VERW-RQ-1", CE_REFERRAL_REVOKED),  # the notice goes again, nothing personal
        (b"VERW-RQ-2", CE_REFERRAL_RELEASED),
    ]
    assert (again, withheld) == (2, 1)
    store.mark_published([(row.id, 0, row.id) for row in store.pending_outbox(100)])
    loss = store.broker_lost(started, disclosure_topics(hub))
    assert loss.withheld == 1
    assert (b"VERW-RQ-1", CE_REFERRAL_RELEASED) not in [
        (r.message.key, dict(r.message.headers)["ce_type"].decode())
        for r in store.pending_outbox(100)
    ]
    store.dispose()


def test_a_message_refused_as_too_large_stays_apart_until_queued_again(store_url: str) -> None:
    """The broker never held it: listed as refused (not pending, not sent again by a
    broker's loss, not reported lost with the broker) until `requeue --refused`."""
    now = [datetime(2026, 12, 1, 10, 0, tzinfo=UTC)]
    store = Store(store_url, now=lambda: now[0])
    store.migrate()
    topic = f"welfare.{datetime.now(UTC).timestamp()}.referrals"  # apart from earlier runs
    for name, body in (("big", b"x" * 5000), ("small", b"{}")):
        store.run(lambda tx, n=name, b=body: tx.add_outbox(OutboundMessage(n, topic, b"k", b, ())))
    big, small = store.pending_outbox(10)
    store.mark_published([(big.id, None, None), (small.id, 0, 7)], refused={big.id})

    [refused] = store.refused_outbox()
    assert (refused.row_id, refused.message_id, refused.topic) == (big.id, "big", topic)
    assert refused.size == 5000
    assert refused.refused_at.replace(tzinfo=UTC) == now[0]
    assert store.refused_count() == 1
    assert store.pending_outbox(10) == []

    loss = store.broker_lost(now[0] - timedelta(minutes=1))
    assert loss.requeued == {topic: 1}, "the sent one goes again, the refused one stays"
    assert [r.message.message_id for r in store.pending_outbox(10)] == ["small"]
    assert [m.message_id for m in store.refused_outbox()] == ["big"]
    store.mark_published([(small.id, 0, 8)])
    lost = store.broker_lost(now[0] + timedelta(minutes=1)).lost
    assert [(entry.topic, entry.messages) for entry in lost] == [(topic, 1)], "never on it"

    with pytest.raises(ValueError, match="needs a moment or the refused"):
        store.requeue_published(None)
    assert store.requeue_published(None, "another-topic", refused=True) == (0, 0)
    assert store.requeue_published(None, topic, refused=True) == (1, 0)
    assert [r.message.message_id for r in store.pending_outbox(10)] == ["big"]
    assert store.refused_outbox() == [] and store.refused_count() == 0
    store.dispose()


def test_a_refused_release_is_not_sent_after_its_consent_is_withdrawn(tmp_path: Path) -> None:
    """Refused as too large, then the patient withdrew: `requeue --refused` leaves it."""
    from schemas.messages import InboundRecord
    from schemas.topics import CE_REFERRAL_RELEASED
    from services.consent.handlers import consent_pipeline
    from services.demo.samples import consent_resource
    from services.intake.handlers import intake_pipeline
    from services.outputs import disclosure_topics

    hub = hub_on(f"sqlite:///{tmp_path / 'hub.db'}")
    store = hub.store
    bsn = fictional_bsn(21)

    def record(topic: str, offset: int, value: bytes) -> list[InboundRecord]:
        return [InboundRecord(topic, 0, offset, b"VERW-RF-1", value, (), None)]

    bundle = to_bytes(referral_bundle("VERW-RF-1", bsn=bsn))
    intake_pipeline(hub).process(record("referral-created", 0, bundle))
    consent = consent_resource("c-rf-1", referral_id="VERW-RF-1", bsn=bsn)
    consent_pipeline(hub).process(record("consent-granted", 1, to_bytes(consent)))
    rows = store.pending_outbox(100)
    store.mark_published([(r.id, None, None) for r in rows], refused={r.id for r in rows})
    releases = [
        r for r in rows if dict(r.message.headers)["ce_type"] == CE_REFERRAL_RELEASED.encode()
    ]
    assert releases, "the consent released the referral"
    consent["status"] = "inactive"
    consent_pipeline(hub, withdrawn=True).process(record("consent-withdrawn", 2, to_bytes(consent)))
    store.mark_published([(r.id, 0, r.id) for r in store.pending_outbox(100)])

    again, withheld = store.requeue_published(None, None, disclosure_topics(hub), refused=True)

    assert withheld == len(releases)
    assert again == len(rows) - len(releases)
    assert store.refused_outbox() == [], "withheld for good: refused no more, kept no longer"
    assert not [
        r
        for r in store.pending_outbox(100)
        if dict(r.message.headers)["ce_type"] == CE_REFERRAL_RELEASED.encode()
    ]
    store.dispose()
