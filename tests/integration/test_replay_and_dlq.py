"""Issue #7: replay rebuilds the live state from the topics without publishing anything;
dead letters are fixed and re-driven once, with lineage."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from adapters.broker.client import Sender, inbound_headers
from adapters.storage.store import Store
from schemas import topics as names
from schemas.registration import MessageDeadLettered, ReferralReceived, ReprocessIgnored
from services.demo.journey import run_demo
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle, to_bytes
from services.replay import ReplayRange, compare, replay
from services.settings import DEMO_PARTICIPANTS
from tests.integration.helpers import (
    TopicReader,
    next_event,
    running,
    send_referral,
    settings_for,
    unique_prefix,
    until,
)

ROOT = Path(__file__).resolve().parents[2]
REFERRALS = 2000
OPERATOR = "r.dekker"  # fictional: the person running the operator commands


def _env(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHAKEL_DATABASE_URL": settings.database_url,
        "SCHAKEL_TOPIC_PREFIX": settings.topic_prefix,
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "SCHAKEL_OPERATOR": OPERATOR,
        "COLUMNS": "200",
    }


async def _schakel(settings, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """Runs the `schakel` command as an operator would, without blocking the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _bsn(i: int) -> str:
    return fictional_bsn(i)


async def _publish_history(bootstrap: str, prefix: str) -> tuple[int, int]:
    """Thousands of referrals; two in three get a consent (some first, some after); every
    tenth consent is withdrawn; every fifteenth referral is bad."""
    bsns = [_bsn(i) for i in range(REFERRALS)]
    good = consents = 0
    async with Sender(bootstrap) as sender:
        sends = []
        for i in range(REFERRALS):
            rid = f"VERW-H-{i:05d}"
            bsn = "123456789" if i % 15 == 7 else bsns[i]
            good += bsn != "123456789"
            referral = (
                prefix + names.REFERRAL_CREATED,
                to_bytes(referral_bundle(rid, bsn=bsn)),
                rid,
                names.REFERRAL_CREATED,
            )
            consent = (
                prefix + names.CONSENT_GRANTED,
                to_bytes(consent_resource(f"c-H-{i}", referral_id=rid, bsn=bsn)),
                rid,
                names.CONSENT_GRANTED,
            )
            order = [referral, consent] if i % 2 else [consent, referral]
            if i % 3 == 2:
                order = [referral]
            elif bsn != "123456789":
                consents += 1  # (a consent with that BSN is dead-lettered too)
            if i % 10 == 4 and i % 3 != 2:
                withdrawal = consent_resource(
                    f"c-H-{i}", referral_id=rid, bsn=bsn, status="inactive"
                )
                order.append(
                    (
                        prefix + names.CONSENT_WITHDRAWN,
                        to_bytes(withdrawal),
                        rid,
                        names.CONSENT_WITHDRAWN,
                    )
                )
            for topic, value, key, logical in order:
                sends.append(
                    await sender.producer.send(
                        topic, value, key=key.encode(), headers=list(inbound_headers(logical))
                    )
                )
        await asyncio.gather(*sends)
    return good, consents


async def test_replay_rebuilds_a_generated_history_and_publishes_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'live.db'}", unique_prefix())
    async with running(settings, keep_topics=True) as hub:
        good, consents = await _publish_history(kafka_bootstrap, settings.topic_prefix)
        await until(
            lambda: (
                hub.hub.store.count("referrals") == good
                and hub.hub.store.count("consents") == consents
            ),
            timeout=120,
            what="the live hub to take in the history",
        )
        await until(
            lambda: not hub.hub.store.pending_outbox(1), timeout=60, what="the outbox to drain"
        )
        live_releases = hub.hub.store.count("releases")
        recipients = [
            hub.hub.topics.welfare_referrals(p.id) for p in hub.hub.participants.of_kind("welfare")
        ]
        before = {}
        for topic in recipients:
            async with TopicReader(kafka_bootstrap, topic) as reader:
                before[topic] = len(await reader.everything())
        assert live_releases > REFERRALS // 2

        rebuilt = Store(f"sqlite:///{tmp_path / 'replay.db'}")
        result = await replay(hub.hub, kafka_bootstrap, rebuilt, ReplayRange())
        assert result.records >= REFERRALS + consents
        assert result.differences == [], result.differences[:5]
        assert rebuilt.count("releases") == live_releases
        assert rebuilt.pending_outbox(1), "the replay's outbox is never sent"
        for topic in recipients:
            async with TopicReader(kafka_bootstrap, topic) as reader:
                assert len(await reader.everything()) == before[topic], (
                    f"replay published to {topic}"
                )
        assert [e.action for e in hub.hub.store.audit_entries()][-1] == "replay", (
            "the run is audited"
        )

        # only the first part of the history: a different state, and the comparison says so
        partial = Store(f"sqlite:///{tmp_path / 'partial.db'}")
        await replay(
            hub.hub,
            kafka_bootstrap,
            partial,
            ReplayRange(topics=(names.REFERRAL_CREATED,)),
            compare_with_live=False,
        )
        assert compare(hub.hub.store, partial), "a replay without consents cannot match"

    cli = await _schakel(settings, "replay", "--into", f"sqlite:///{tmp_path / 'cli.db'}")
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    assert "identical to the live store" in cli.stdout
    live = Store(settings.database_url)
    last = live.audit_entries()[-1]
    live.dispose()
    assert (last.action, last.actor) == ("replay", f"operator:{OPERATOR}"), (
        "the replay's entry names the person who ran it"
    )
    refused = await _schakel(settings, "replay", "--into", settings.database_url)
    assert refused.returncode == 2
    assert "is the live store" in refused.stderr


async def test_replay_rebuilds_the_demo(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'demo.db'}", unique_prefix())
    code = await run_demo(
        Console(file=io.StringIO(), width=120), settings=settings, workdir=tmp_path
    )
    assert code == 0
    from schemas.topics import Topics
    from services.hub import load_configured_participants
    from services.runtime import Hub

    live = Hub(
        settings=settings,
        participants=load_configured_participants(settings),
        store=Store(settings.database_url),
        topics=Topics(settings.topic_prefix),
    )
    result = await replay(
        live, kafka_bootstrap, Store(f"sqlite:///{tmp_path / 'rebuilt.db'}"), ReplayRange()
    )
    assert result.records >= 4
    assert result.differences == []


async def test_dead_letters_are_fixed_and_redriven_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    async with running(settings) as hub:
        events = hub.hub.observers.subscribe()
        await send_referral(hub, "VERW-DLQ-1", bsn="123456789")
        await next_event(events, MessageDeadLettered, key="VERW-DLQ-1")
        await hub.relay.publish_pending()

        listed = await _schakel(settings, "dlq", "list")
        assert "invalid-bsn" in listed.stdout
        (letter,) = hub.hub.store.outbox_rows(topic=hub.hub.topics.dead_letter)
        shown = await _schakel(settings, "dlq", "show", letter.message.message_id, "--body")
        assert "schakel-error-reason: invalid-bsn" in shown.stdout
        assert "VERW-DLQ-1" in shown.stdout

        fixed = tmp_path / "fixed.json"
        fixed.write_bytes(to_bytes(referral_bundle("VERW-DLQ-1", bsn="999900043")))
        sent = await _schakel(
            settings, "dlq", "reprocess", letter.message.message_id, "--file", str(fixed)
        )
        assert sent.returncode == 0, sent.stderr
        await next_event(events, ReferralReceived, referral_id="VERW-DLQ-1")
        again = await _schakel(settings, "dlq", "reprocess", letter.message.message_id)
        assert again.returncode == 2
        assert "reprocessed before" in again.stderr

        async with TopicReader(kafka_bootstrap, hub.hub.topics.referral_created) as reader:
            records = await reader.everything()
        redriven = next(
            r for r in records if any(k == "schakel-reprocess-id" for k, _ in r.headers)
        )
        lineage = dict(redriven.headers)
        assert (
            lineage["schakel-reprocess-of"]
            .decode()
            .startswith(hub.hub.topics.referral_created + "/")
        )
        assert lineage["schakel-dead-letter-id"].decode() == letter.message.message_id
        assert "schakel-error-reason" not in lineage
        assert lineage["ce_type"] == b"nl.schakel.referral-created.v1", (
            "the original headers travel along"
        )

        # the same re-driven record delivered twice is processed once
        async with Sender(kafka_bootstrap) as sender:
            await sender.send(
                redriven.topic, redriven.value, key=redriven.key, headers=tuple(redriven.headers)
            )
        ignored = await next_event(events, ReprocessIgnored)
        assert ignored.reprocess_id == lineage["schakel-reprocess-id"].decode()
        by = {e.action: e.actor for e in hub.hub.store.audit_entries()}
        assert by["dlq-reprocess"] == by["dlq-show"] == f"operator:{OPERATOR}"
        stored = hub.hub.store.run(lambda tx: tx.referral("VERW-DLQ-1"))
        assert stored is not None, "the fixed referral is held, once"
        assert stored.referral.client.bsn == "999900043"
        assert redriven.value == fixed.read_bytes(), "the fixed bytes were re-driven"
