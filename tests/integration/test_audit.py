"""Issue #7: the audit trail on a real store (SQLite and PostgreSQL), tampered with in
every way, and the `schakel audit` commands as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import delete, insert, select, update

from adapters.storage import tables as t
from adapters.storage.store import Store
from schemas.registration import FeedbackForwarded, ReferralReleased
from services.audit_reports import verify_store
from services.demo.samples import DEMO_BSN
from services.settings import DEMO_PARTICIPANTS
from tests.integration.helpers import (
    gather_events,
    next_event,
    running,
    send_consent,
    send_feedback,
    send_referral,
    settings_for,
    token,
    unique_prefix,
)

ROOT = Path(__file__).resolve().parents[2]


async def _history(kafka_bootstrap: str, store_url: str, *, keep_topics: bool = False) -> str:
    """A referral's journey through a real hub; its topic prefix (with `keep_topics`, its
    audit entries are on the audit topic when this returns)."""
    prefix = unique_prefix()
    settings = settings_for(kafka_bootstrap, store_url, prefix)
    async with running(settings, keep_topics=keep_topics) as hub:
        events = hub.hub.observers.subscribe()
        await send_consent(hub, "c-AU-1", "VERW-AU-1", municipality_cbs=("0118",))
        await send_referral(hub, "VERW-AU-1")
        await gather_events(
            events, lambda seen: sum(isinstance(e, ReferralReleased) for e in seen) == 2
        )
        await send_feedback(hub, "VERW-AU-1", "contacted")
        await next_event(events, FeedbackForwarded)
        async with httpx.AsyncClient(base_url=hub.http_url or "") as client:
            listed = await client.get(
                "/api/v1/registrations",
                headers={"Authorization": f"Bearer {token('welzijn-hoogeveen')}"},
            )
            assert listed.status_code == 200
    return prefix  # `running` publishes what is pending before it stops the hub


def _cli(
    store_url: str, *args: str, broker: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"},
        **(broker or {}),
        "SCHAKEL_DATABASE_URL": store_url,
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "SCHAKEL_LOG_FORMAT": "json",
        "SCHAKEL_OPERATOR": "j.devries",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_tampering_is_detected_and_reported(kafka_bootstrap: str, store_url: str) -> None:
    await _history(kafka_bootstrap, store_url)
    store = Store(store_url)
    with store.engine.connect() as conn:
        rows = [r._asdict() for r in conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq))]
    assert len(rows) >= 4
    assert verify_store(store).verdict.ok
    verified = _cli(store_url, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit chain intact" in verified.stdout

    def restore() -> None:
        with store.engine.begin() as conn:
            conn.execute(delete(t.audit_log))
            conn.execute(insert(t.audit_log), rows)

    middle = rows[len(rows) // 2]
    forged = {**middle, "canonical": middle["canonical"].replace('"recorded":"2', '"recorded":"1')}
    assert forged["canonical"] != middle["canonical"]
    tampers = {
        "changed": lambda c: c.execute(
            update(t.audit_log)
            .where(t.audit_log.c.seq == middle["seq"])
            .values(canonical=forged["canonical"])
        ),
        "removed": lambda c: c.execute(
            delete(t.audit_log).where(t.audit_log.c.seq == middle["seq"])
        ),
        "inserted": lambda c: c.execute(
            insert(t.audit_log).values(**{**middle, "seq": len(rows) + 1})
        ),
        "reordered": lambda c: (
            c.execute(update(t.audit_log).where(t.audit_log.c.seq == middle["seq"]).values(seq=-1)),
            c.execute(
                update(t.audit_log)
                .where(t.audit_log.c.seq == middle["seq"] + 1)
                .values(seq=middle["seq"])
            ),
            c.execute(
                update(t.audit_log).where(t.audit_log.c.seq == -1).values(seq=middle["seq"] + 1)
            ),
        ),
    }
    for name, tamper in tampers.items():
        with store.engine.begin() as conn:
            tamper(conn)
        verdict = verify_store(store).verdict
        assert not verdict.ok, name
        assert verdict.first_broken is not None and verdict.first_broken <= len(rows) + 1, name
        broken = _cli(store_url, "verify")
        assert broken.returncode == 1, name
        assert f"broken at entry {verdict.first_broken}" in broken.stdout, name
        restore()
        assert verify_store(store).verdict.ok, f"restored after {name}"
    store.dispose()


async def test_entries_removed_from_the_end_are_found_on_the_audit_topic(
    kafka_bootstrap: str, store_url: str
) -> None:
    """The newest entries gone leave the chain itself intact: their copies on the audit
    topic tell."""
    prefix = await _history(kafka_bootstrap, store_url, keep_topics=True)
    broker = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "SCHAKEL_TOPIC_PREFIX": prefix}
    store = Store(store_url)
    entries = verify_store(store).verdict.checked
    intact = _cli(store_url, "verify", broker=broker)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert f"its entry {entries} matches its copy on the audit topic" in intact.stdout
    with store.engine.begin() as conn:
        conn.execute(delete(t.audit_log).where(t.audit_log.c.seq > entries - 2))
    assert verify_store(store).verdict.ok  # the chain alone cannot tell
    alone = _cli(store_url, "verify")
    assert alone.returncode == 0
    assert "not compared with the audit topic" in alone.stdout
    broken = _cli(store_url, "verify", broker=broker)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert (
        f"the audit topic holds entry {entries}, but the store's chain ends at entry "
        f"{entries - 2}" in " ".join(broken.stdout.split())
    )
    store.dispose()


async def test_trail_and_subject_access(kafka_bootstrap: str, tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'hub.db'}"
    await _history(kafka_bootstrap, store_url)
    trail = _cli(store_url, "trail", "VERW-AU-1", "--json")
    assert trail.returncode == 0, trail.stderr
    lines = [orjson.loads(line) for line in trail.stdout.splitlines()]
    received = {(line["action"], line["recipient"]) for line in lines}
    assert ("release", "welzijn-hoogeveen") in received
    assert ("registration", "gemeente-hoogeveen") in received
    assert ("feedback-forwarded", "praktijk-de-linde") in received
    assert ("read", None) in received, "the organisation's read of the registration"
    release = next(line for line in lines if line["action"] == "release")
    assert release["consent_id"] == "c-AU-1"
    assert "referral" in release["data"]
    human = _cli(store_url, "trail", "VERW-AU-1")
    assert "Welzijn De Schakel Hoogeveen" in human.stdout
    assert "Gemeente Hoogeveen" in human.stdout
    store = Store(store_url)
    trail_reads = [
        e for e in store.audit_entries(referral_id="VERW-AU-1") if e.actor == "operator:j.devries"
    ]
    store.dispose()
    assert len(trail_reads) == 2, "each look at the trail is an audited read"
    assert all(e.action == "read" and e.patient for e in trail_reads)
    assert all("audit-trail" in e.canonical for e in trail_reads)

    report = tmp_path / "inzage.html"
    written = _cli(store_url, "subject-access", DEMO_BSN, "--out", str(report))
    assert written.returncode == 0, written.stderr
    page = report.read_text()
    assert "Overzicht van verstrekte gegevens" in page
    assert "Report of data disclosed" in page
    assert "Welzijn De Schakel Hoogeveen" in page and "Gemeente Hoogeveen, Wmo-loket" in page
    assert "Huisartsenpraktijk De Linde" in page, "the GP received feedback about the patient"
    assert DEMO_BSN not in page and "Vries-Bakker" not in page
    assert DEMO_BSN not in written.stdout + written.stderr
    store = Store(store_url)
    assert [e.action for e in store.audit_entries()][-1] == "subject-access", "asking is audited"
    assert verify_store(store).verdict.ok
    store.dispose()
    refused = _cli(store_url, "subject-access", "123456789")
    assert refused.returncode == 2
    assert "not a valid BSN" in refused.stderr
    assert "123456789" not in refused.stderr


@pytest.mark.parametrize("who", ["someone-else"])
async def test_subject_access_for_an_unknown_patient_is_empty(
    kafka_bootstrap: str, tmp_path: Path, who: str
) -> None:
    store_url = f"sqlite:///{tmp_path / 'hub.db'}"
    await _history(kafka_bootstrap, store_url)
    report = tmp_path / "leeg.html"
    assert (
        _cli(store_url, "subject-access", "999900043", "--out", str(report), "--by", who).returncode
        == 0
    )
    assert "Er zijn geen gegevens over u verstrekt of ingezien." in report.read_text()
