"""The crash harness (issue #8): the hub as a real process on an external broker, fed a
stream of referrals, consents, feedback and withdrawals, SIGKILLed at random moments many
times and restarted; at the end every expected output is counted per topic: none lost,
none twice."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path

import orjson

from adapters.broker.client import Sender
from adapters.storage.store import Store
from schemas import topics as names
from schemas.feedback import WelfareFeedback
from schemas.ids import message_id, release_id
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle, to_bytes
from services.domain.feedback import message_id_of
from tests.conftest import ARTIFACTS
from tests.integration.helpers import (
    HubProcess,
    TopicReader,
    process_env,
    produce,
    revoked_count,
    unique_prefix,
    until,
)

KILLS_PER_PHASE = 11
REFERRALS = 150
WELFARE, MUNICIPALITY, PRACTICE = "welzijn-hoogeveen", "gemeente-hoogeveen", "praktijk-de-linde"


async def _kill_loop(
    env: dict[str, str], rng: random.Random, kills: int, phase: str
) -> list[float]:
    moments = []
    for k in range(kills):
        hub = HubProcess(env, ARTIFACTS / f"crash-{phase}-{k}.log")
        await hub.start()
        moment = rng.uniform(0.2, 2.5)  # before, during and after the consumers join
        moments.append(round(moment, 2))
        await asyncio.sleep(moment)  # the kill point itself: a deliberate random delay
        await hub.kill()
    return moments


async def test_random_sigkills_lose_and_duplicate_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SCHAKEL_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    prefix = unique_prefix()
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    env = process_env(kafka_bootstrap, db, prefix)
    expected: dict[str, set[str]] = {WELFARE: set(), MUNICIPALITY: set(), PRACTICE: set()}
    registered = set()
    async with Sender(kafka_bootstrap) as sender:
        # the hub must exist once so that it creates the topics before anyone sends
        first = HubProcess(env, ARTIFACTS / "crash-setup.log")
        await first.start()
        await first.wait_for(event="hub started")
        await first.kill()
        for i in range(REFERRALS):
            rid = f"VERW-X-{i:04d}"
            with_municipality = i % 5 == 0
            if with_municipality:
                registered.add(rid)
                expected[MUNICIPALITY].add(release_id(rid, MUNICIPALITY))
            expected[WELFARE].add(release_id(rid, WELFARE))
            consent = consent_resource(
                f"c-X-{i}",
                referral_id=rid,
                bsn=fictional_bsn(i),
                municipality_cbs=("0118",) if with_municipality else (),
            )
            await produce(
                sender,
                prefix,
                names.REFERRAL_CREATED,
                to_bytes(referral_bundle(rid, bsn=fictional_bsn(i))),
                rid,
            )
            await produce(sender, prefix, names.CONSENT_GRANTED, to_bytes(consent), rid)
        await sender.producer.flush()

        moments = await _kill_loop(env, rng, KILLS_PER_PHASE, "a")
        final = HubProcess(env, ARTIFACTS / "crash-a-final.log")
        await final.start()
        store = Store(db)
        try:
            await until(
                lambda: (
                    store.count("releases") == REFERRALS + len(registered)
                    and not store.pending_outbox(1)
                ),
                timeout=120,
                what="every release, published",
            )
        finally:
            await final.kill()

        # phase 2: a withdrawal for every seventh consent, feedback for all other referrals
        # (feedback after a withdrawal is refused, so the two are kept apart)
        withdrawn = {f"VERW-X-{i:04d}" for i in range(0, REFERRALS, 7)}
        for i in range(REFERRALS):
            rid = f"VERW-X-{i:04d}"
            if rid in withdrawn:
                continue
            body = {
                "referral_id": rid,
                "organisation": WELFARE,
                "status": "contacted",
                "occurred_at": "2026-12-02T10:00:00+01:00",
                "summary": "Contact gehad.",
            }
            expected[PRACTICE].add(message_id_of(WelfareFeedback.model_validate(body)))
            await produce(sender, prefix, names.FEEDBACK_RETURNED, orjson.dumps(body), rid)
        for i in range(0, REFERRALS, 7):
            rid = f"VERW-X-{i:04d}"
            withdrawal = consent_resource(
                f"c-X-{i}", referral_id=rid, bsn=fictional_bsn(i), status="inactive"
            )
            await produce(sender, prefix, names.CONSENT_WITHDRAWN, to_bytes(withdrawal), rid)
            expected[WELFARE].add(message_id("revoked", rid, WELFARE))
            if rid in registered:
                expected[MUNICIPALITY].add(message_id("revoked", rid, MUNICIPALITY))
        await sender.producer.flush()

        moments += await _kill_loop(env, rng, KILLS_PER_PHASE, "b")
        final = HubProcess(env, ARTIFACTS / "crash-b-final.log")
        await final.start()
        try:
            await until(
                lambda: (
                    store.count("feedback") == len(expected[PRACTICE])
                    and revoked_count(store) == len(withdrawn) + len(withdrawn & registered)
                    and not store.pending_outbox(1)
                ),
                timeout=120,
                what="every feedback and revoke notice, published",
            )
        finally:
            await final.terminate()
        # every audit entry the store holds has its copy on the audit topic
        expected["audit"] = {
            message_id("audit", str(entry.seq), entry.hash) for entry in store.audit_entries()
        }
        store.dispose()
    assert len(expected["audit"]) >= 2 * REFERRALS, "releases and feedback are audited"

    topics = {
        WELFARE: f"{prefix}welfare.{WELFARE}.referrals",
        MUNICIPALITY: f"{prefix}wmo.0118.registrations",
        PRACTICE: f"{prefix}his.{PRACTICE}.feedback",
        "audit": f"{prefix}audit",
    }
    report = []
    for who, topic in topics.items():
        async with TopicReader(kafka_bootstrap, topic) as reader:
            seen = Counter(dict(r.headers)["ce_id"].decode() for r in await reader.everything())
        want = expected[who]
        lost = want - set(seen)
        duplicated = {k: v for k, v in seen.items() if v > 1}
        report.append((topic, len(want), len(lost), len(duplicated)))
    kills = len(moments)
    summary = "; ".join(
        f"{t}: {n} expected, {lost} lost, {dup} duplicated" for t, n, lost, dup in report
    )
    print(f"crash harness (seed {seed}): {kills} SIGKILLs at {moments}: {summary}")
    assert all(lost == 0 and dup == 0 for _, _, lost, dup in report), f"seed {seed}: {summary}"
