"""The end of a consent's period, end to end: until then the welfare organisation has the
referral and sees the registration; at the first tick after it, it gets a revoke notice
(`consent-expired`), sees the registration no more, and the notice is audited on the
consent that ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from typer.testing import CliRunner

from adapters.storage.store import Store
from schemas.notices import ReferralRevokedNotice
from schemas.registration import ReferralReleased, ReferralRevoked
from services.audit_reports import referral_trail, subject_access_html
from services.cli import app
from services.replay import ReplayRange, replay
from services.settings import DEMO_PARTICIPANTS
from tests.integration.helpers import (
    FakeClock,
    TopicReader,
    next_event,
    running,
    send_consent,
    send_referral,
    settings_for,
    token,
    unique_prefix,
)

WELFARE = "welzijn-hoogeveen"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LAST_MOMENT = datetime(2026, 12, 2, 22, 59, 59, 999999, tzinfo=UTC)  # 2 December, 23:59:59 CET


async def _task(hub, referral_id: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The referring practice's view of its Task: (status, business status)."""
    async with httpx.AsyncClient(
        base_url=hub.http_url or "",
        headers={"Authorization": f"Bearer {token('praktijk-de-linde')}"},
        timeout=10,
    ) as practice:
        found = (await practice.get("/fhir/Task", params={"based-on": referral_id})).json()
    [entry] = found["entry"]
    task = entry["resource"]
    return task["status"], task["businessStatus"]["coding"][0]["code"]


async def test_a_consent_period_that_ends_ends_the_flow_and_the_access(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    clock = FakeClock(T0)
    async with running(settings, clock) as hub:
        events = hub.hub.observers.subscribe()
        await send_consent(hub, "c-EX-1", "VERW-EX-1", period={"end": "2026-12-02"})
        await send_referral(hub, "VERW-EX-1")
        released = await next_event(events, ReferralReleased, referral_id="VERW-EX-1")
        async with httpx.AsyncClient(
            base_url=hub.http_url or "",
            headers={"Authorization": f"Bearer {token(WELFARE)}"},
            timeout=10,
        ) as welfare:
            before = (await welfare.get("/api/v1/registrations")).json()
            task_before = await _task(hub, "VERW-EX-1")
            clock.now = LAST_MOMENT
            assert not await hub.ticker.tick_now(), "in force to its last moment"
            clock.now = LAST_MOMENT + timedelta(seconds=30)  # the next tick
            ticked = await hub.ticker.tick_now()
            after = (await welfare.get("/api/v1/registrations")).json()
            detail = await welfare.get(f"/api/v1/registrations/{released.registration_id}")
            task_after = await _task(hub, "VERW-EX-1")
        await hub.relay.publish_pending()
        async with TopicReader(kafka_bootstrap, hub.hub.topics.welfare_referrals(WELFARE)) as t:
            intake, notice = await t.everything()
        entries = [e for e in hub.hub.store.audit_entries() if e.action == "revoke-notice"]
        trail = referral_trail(hub.hub.store, "VERW-EX-1")
        report = subject_access_html(trail, hub.hub.participants, T0)

    assert [r["registration_id"] for r in before] == [released.registration_id]
    assert before[0]["client_name"], "the organisation saw the client while consented"
    [revoked] = [e for e in ticked if isinstance(e, ReferralRevoked)]
    assert (revoked.reason, revoked.cause) == ("consent-expired", "c-EX-1")
    assert after == [] and detail.status_code == 404, "its access ended with the consent"
    assert task_before == ("requested", "released")
    assert task_after == ("cancelled", "revoked"), "the GP's open Task is cancelled"
    assert dict(intake.headers)["ce_type"] == b"nl.schakel.referral-released.v1"
    assert dict(notice.headers)["ce_type"] == b"nl.schakel.referral-revoked.v1"
    body = ReferralRevokedNotice.model_validate(orjson.loads(notice.value))
    assert (body.referral_id, body.reason) == ("VERW-EX-1", "consent-expired")
    assert body.revoked_at == "2026-12-02T23:00:29.999999Z"
    [entry] = entries
    assert (entry.recipient, entry.consent_id) == (WELFARE, "c-EX-1")
    assert orjson.loads(entry.canonical)["outcomeDesc"] == "consent-expired"
    assert [line.detail for line in trail if line.action == "revoke-notice"] == ["consent-expired"]
    assert "notice: consent period ended" in report and "toestemming verlopen" in report
    assert "consent withdrawn" not in report
    shown = CliRunner().invoke(
        app,
        ["audit", "trail", "VERW-EX-1"],
        env={
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SCHAKEL_DATABASE_URL": settings.database_url,
            "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
            "SCHAKEL_TOPIC_PREFIX": settings.topic_prefix,
            "COLUMNS": "250",
        },
    )
    assert shown.exit_code == 0, shown.output
    assert "revoke-notice (consent-expired)" in shown.output


async def test_the_replay_ends_a_consent_where_the_live_hub_did(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The replay's timer runs at the end of a period too (after the last record, up to
    the live clock), so its state matches the live hub's: the release revoked, the
    trajectory closed. (The live clock starts now, as the records' broker timestamps,
    which are the replay's clock.)"""
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'live.db'}", unique_prefix())
    clock = FakeClock(datetime.now(UTC))
    end = clock.now + timedelta(hours=1)
    async with running(settings, clock, keep_topics=True) as hub:
        events = hub.hub.observers.subscribe()
        await send_consent(hub, "c-EX-2", "VERW-EX-2", period={"end": end.isoformat()})
        await send_referral(hub, "VERW-EX-2")
        await next_event(events, ReferralReleased, referral_id="VERW-EX-2")
        clock.advance(timedelta(hours=2))
        ticked = await hub.ticker.tick_now()
        assert [type(e).__name__ for e in ticked] == ["ReferralRevoked"]

        rebuilt = Store(f"sqlite:///{tmp_path / 'replay.db'}")
        result = await replay(hub.hub, kafka_bootstrap, rebuilt, ReplayRange())
        [release] = rebuilt.run(lambda tx: list(tx.releases_of("VERW-EX-2").values()))
        rebuilt.dispose()
    assert result.differences == []
    assert release.revoked_at is not None and release.revoked_at > end
