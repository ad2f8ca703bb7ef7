"""Issue #5 end to end: feedback reaches the GP as FHIR, spoofed feedback does not, the
contact term fires once (also across a restart), and re-sends never make a second
registration or intake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from fhir.resources.R4B.bundle import Bundle

from schemas.registration import (
    FeedbackForwarded,
    MessageDeadLettered,
    ReferralAwaitingConsent,
    ReferralReleased,
    ReferralUpdated,
)
from services.demo.samples import DEMO_BSN
from tests.integration.helpers import (
    FakeClock,
    TopicReader,
    next_event,
    running,
    send_consent,
    send_feedback,
    send_referral,
    settings_for,
    unique_prefix,
)

PRACTICE, WELFARE = "praktijk-de-linde", "welzijn-hoogeveen"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def _release(hub, rid: str) -> None:  # type: ignore[no-untyped-def]
    events = hub.hub.observers.subscribe()
    await send_consent(hub, f"c-{rid}", rid)
    await send_referral(hub, rid)
    await next_event(events, ReferralReleased, referral_id=rid)
    hub.hub.observers.unsubscribe(events)


async def test_feedback_reaches_the_gp_and_spoofs_do_not(
    kafka_bootstrap: str, store_url: str
) -> None:
    async with running(settings_for(kafka_bootstrap, store_url, unique_prefix())) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        await _release(hub, "VERW-FB-1")
        await send_feedback(
            hub, "VERW-FB-1", "contacted", organisation="welzijn-de-wolden"
        )  # spoofed
        spoof = await next_event(events, MessageDeadLettered)
        assert spoof.reason == "not-authorised"
        await send_feedback(hub, "VERW-FB-1", "contacted", summary="Kennismaking gehad.")
        await send_feedback(
            hub, "VERW-FB-1", "contacted", summary="Kennismaking gehad."
        )  # duplicate
        await send_feedback(
            hub,
            "VERW-FB-1",
            "completed",
            occurred_at="2026-12-20T10:00:00+01:00",
            summary="Traject afgerond.",
        )
        await next_event(events, FeedbackForwarded, status="contacted")
        await next_event(events, FeedbackForwarded, status="completed")
        async with TopicReader(kafka_bootstrap, topics.his_feedback(PRACTICE)) as gp:
            contacted, completed = await gp.read(2)
            await hub.relay.publish_pending()
            assert await gp.total() == 2, "no spoof, no duplicate reached the GP"
        view = hub.hub.store.registration_of_referral("VERW-FB-1")
        assert [e.status for e in view.timeline][-2:] == ["contacted", "completed"]
        assert view.timeline[-1].by == WELFARE

    for record, task_status, summary in (
        (contacted, "in-progress", "Kennismaking gehad."),
        (completed, "completed", "Traject afgerond."),
    ):
        assert dict(record.headers)["ce_type"] == b"nl.schakel.feedback-forwarded.v1"
        data = orjson.loads(record.value)
        Bundle.model_validate(data)
        task, communication = (e["resource"] for e in data["entry"])
        assert task["status"] == task_status
        assert task["basedOn"][0]["identifier"]["value"] == "VERW-FB-1"
        assert communication["payload"][0]["contentString"] == summary
        assert DEMO_BSN.encode() not in record.value


async def test_overdue_fires_once_also_across_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    clock = FakeClock(T0)
    async with running(settings, clock, keep_topics=True) as hub:
        await _release(hub, "VERW-OD-1")
        clock.advance(timedelta(days=13))
        assert not await hub.ticker.tick_now()
        view = hub.hub.store.registration_of_referral("VERW-OD-1")
        assert view.status == "released"
    # the hub is down across the deadline; it ticks when it starts, and again here
    clock.advance(timedelta(days=5))
    async with running(settings, clock, keep_topics=True) as hub:
        await hub.ticker.tick_now()
        await hub.ticker.tick_now()
        view = hub.hub.store.registration_of_referral("VERW-OD-1")
        assert [e.status for e in view.timeline].count("overdue") == 1
    async with running(settings, clock) as hub:
        assert not await hub.ticker.tick_now(), "and not again after another restart"
        await hub.relay.publish_pending()
        topics = hub.hub.topics
        async with TopicReader(kafka_bootstrap, topics.his_feedback(PRACTICE)) as gp:
            (notice,) = await gp.everything()
        async with TopicReader(kafka_bootstrap, topics.welfare_referrals(WELFARE)) as welfare:
            intake, reminder = await welfare.everything()
        view = hub.hub.store.registration_of_referral("VERW-OD-1")
        assert view.status == "overdue"
        assert view.timeline[-1].at == T0 + timedelta(days=18)
    assert dict(notice.headers)["ce_type"] == b"nl.schakel.contact-overdue.v1"
    Bundle.model_validate(orjson.loads(notice.value))
    assert dict(reminder.headers)["ce_type"] == b"nl.schakel.contact-reminder.v1"
    assert orjson.loads(reminder.value)["reason"] == "contact-overdue"
    assert dict(intake.headers)["ce_type"] == b"nl.schakel.referral-released.v1"


async def test_resends_and_new_referrals_keep_one_registration_and_one_intake(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running(
        settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    ) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        await _release(hub, "VERW-RS-1")
        await send_referral(hub, "VERW-RS-1")  # the same again
        await send_referral(hub, "VERW-RS-1", reason="Schulden en eenzaamheid")  # changed
        await next_event(events, ReferralUpdated, referral_id="VERW-RS-1")
        await send_referral(
            hub, "VERW-RS-2", reason="Mantelzorg overbelast"
        )  # same patient, new referral
        await next_event(events, ReferralAwaitingConsent, referral_id="VERW-RS-2")
        await send_consent(hub, "c-VERW-RS-2", "VERW-RS-2")
        linked = await next_event(events, ReferralReleased, referral_id="VERW-RS-2")
        assert not linked.first_of_registration
        await hub.relay.publish_pending()
        async with TopicReader(kafka_bootstrap, topics.welfare_referrals(WELFARE)) as welfare:
            messages = await welfare.read(3)
            assert await welfare.total() == 3
        first = hub.hub.store.registration_of_referral("VERW-RS-1")
        second = hub.hub.store.registration_of_referral("VERW-RS-2")
        assert first.registration_id == second.registration_id
        assert hub.hub.store.count("registrations") == 1
    by_referral: dict[bytes, list[bytes]] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        by_referral.setdefault(m.key, []).append(dict(m.headers)["ce_type"])
    assert by_referral == {
        b"VERW-RS-1": [b"nl.schakel.referral-released.v1", b"nl.schakel.referral-updated.v1"],
        b"VERW-RS-2": [b"nl.schakel.referral-updated.v1"],
    }, "one intake for the registration, then updates"
    bodies = {(m.key, dict(m.headers)["ce_type"]): orjson.loads(m.value) for m in messages}
    assert {b["registration_id"] for b in bodies.values()} == {first.registration_id}
    assert (
        bodies[(b"VERW-RS-1", b"nl.schakel.referral-updated.v1")]["reason"]
        == "Schulden en eenzaamheid"
    )
    assert (
        bodies[(b"VERW-RS-2", b"nl.schakel.referral-updated.v1")]["reason"]
        == "Mantelzorg overbelast"
    )
