"""Scale-out (issue #10): three `schakel run` processes in one consumer group per service,
on one broker and one PostgreSQL. Every referral is released exactly once, per-referral
order holds, the work is shared, and killing one instance hands its partitions (and, if
it had it, the outbox relay) to the others without loss."""

from __future__ import annotations

from collections import Counter, defaultdict

from adapters.broker.client import Sender
from adapters.storage.store import Store
from schemas import topics as names
from schemas.ids import message_id, release_id
from services.demo.samples import consent_resource, fictional_bsn, to_bytes
from tests.conftest import ARTIFACTS
from tests.integration.helpers import (
    HubProcess,
    TopicReader,
    process_env,
    produce,
    revoked_count,
    send_referrals_with_consent,
    unique_prefix,
    until,
)

WELFARE = "welzijn-hoogeveen"
WAVE = 120


def _rid(i: int) -> str:
    return f"VERW-S-{i:04d}"


def _handled(hub: HubProcess) -> set[str]:
    """Referral ids this instance's consumers applied something for."""
    return {
        line["referral_id"]
        for line in hub.lines
        if line.get("logger") == "schakel.pipeline" and line.get("referral_id")
    }


async def test_three_instances_share_work_and_survive_losing_one(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    prefix = unique_prefix()
    env = {**process_env(kafka_bootstrap, postgres_url, prefix), "SCHAKEL_TOPIC_PARTITIONS": "6"}
    hubs = [HubProcess(env, ARTIFACTS / f"scale-out-{n}.log") for n in range(3)]
    store = Store(postgres_url)
    try:
        for hub in hubs:
            await hub.start()
        for hub in hubs:
            await hub.wait_for(event="hub started")
        async with Sender(kafka_bootstrap) as sender:
            await send_referrals_with_consent(sender, prefix, "S", range(WAVE))
            await until(lambda: store.count("releases") >= WAVE // 3, timeout=90, what="work")
            [holder] = [n for n, hub in enumerate(hubs) if _took_lock(hub)]
            await hubs[holder].kill()  # the relaying instance, mid-stream, without warning
            survivors = [hub for n, hub in enumerate(hubs) if n != holder]
            await send_referrals_with_consent(sender, prefix, "S", range(WAVE, 2 * WAVE))
            await until(
                lambda: store.count("releases") == 2 * WAVE and not store.pending_outbox(1),
                timeout=120,
                what="every release, published",
            )
            withdrawn = range(0, 2 * WAVE, 4)
            for i in withdrawn:
                withdrawal = consent_resource(
                    f"c-S-{i}", referral_id=_rid(i), bsn=fictional_bsn(i), status="inactive"
                )
                await produce(
                    sender, prefix, names.CONSENT_WITHDRAWN, to_bytes(withdrawal), _rid(i)
                )
            await sender.producer.flush()
            await until(
                lambda: revoked_count(store) == len(withdrawn) and not store.pending_outbox(1),
                timeout=120,
                what="every revoke notice, published",
            )
        # before the stops (a stopping holder hands the lock to the next survivor)
        took_over = [_took_lock(hub) for hub in survivors]
        for hub in survivors:
            assert await hub.terminate() == 0
    finally:
        for hub in hubs:
            if hub.proc is not None and hub.proc.returncode is None:
                await hub.kill()
        store.dispose()

    async with TopicReader(kafka_bootstrap, f"{prefix}welfare.{WELFARE}.referrals") as reader:
        records = await reader.everything()
    ids = Counter(dict(r.headers)["ce_id"].decode() for r in records)
    releases = {release_id(_rid(i), WELFARE) for i in range(2 * WAVE)}
    revokes = {message_id("revoked", _rid(i), WELFARE) for i in withdrawn}
    assert set(ids) == releases | revokes, "lost or unexpected messages"
    assert max(ids.values()) == 1, {k: n for k, n in ids.items() if n > 1}

    # per referral: one partition, the release before its revoke notice
    by_key: dict[bytes, list[tuple[int, int, bytes]]] = defaultdict(list)
    for r in records:
        by_key[r.key].append((r.partition, r.offset, dict(r.headers)["ce_type"]))
    for i in withdrawn:
        events = sorted(by_key[_rid(i).encode()], key=lambda e: e[1])
        assert len({p for p, _, _ in events}) == 1
        assert [t for _, _, t in events] == [
            b"nl.schakel.referral-released.v1",
            b"nl.schakel.referral-revoked.v1",
        ]

    # shared: the survivors both took part of the second wave, which arrived after the kill
    second = {_rid(i) for i in range(WAVE, 2 * WAVE)}
    shares = [len(_handled(hub) & second) for hub in survivors]
    assert all(share > 0 for share in shares), shares
    # the relay moved: exactly one survivor took the lock after the holder died
    assert sum(took_over) == 1, took_over
    print(f"scale-out: second wave split {shares} between the survivors of instance {holder}")


def _took_lock(hub: HubProcess) -> bool:
    return any(
        str(line.get("event", "")).startswith("outbox relay lock taken") for line in hub.lines
    )
