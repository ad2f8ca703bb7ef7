"""SIGTERM under load (issue #8): `schakel run` finishes the batches in hand, publishes what
they produced, and exits 0; started again it carries on, and nothing is lost or doubled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from adapters.broker.client import Sender
from adapters.storage.store import Store
from schemas.ids import release_id
from tests.conftest import ARTIFACTS
from tests.integration.helpers import (
    HubProcess,
    TopicReader,
    process_env,
    send_referrals_with_consent,
    unique_prefix,
    until,
)

REFERRALS = 600
WELFARE = "welzijn-hoogeveen"


async def test_sigterm_under_load_drains_and_exits_cleanly(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    env = process_env(kafka_bootstrap, db, prefix)
    setup = HubProcess(env, ARTIFACTS / "sigterm-setup.log")
    await setup.start()
    await setup.wait_for(event="hub started")  # the topics exist now
    assert await setup.terminate() == 0
    async with Sender(kafka_bootstrap) as sender:
        ids = await send_referrals_with_consent(sender, prefix, "T", range(REFERRALS))
    expected = {release_id(rid, WELFARE) for rid in ids}

    hub = HubProcess(env, ARTIFACTS / "sigterm-first.log")
    await hub.start()  # the whole backlog is waiting for it
    await hub.wait_for(outcome="released")  # work is under way
    returncode = await hub.terminate()

    assert returncode == 0, f"exit status {returncode}; log in {hub.log_path}"
    assert any(line.get("event") == "hub stopped" for line in hub.lines)
    errors = [line for line in hub.lines if line.get("level") in ("error", "critical")]
    assert not errors, errors[:3]
    store = Store(db)
    try:
        released_at_stop = store.count("releases")
        assert 0 < released_at_stop < REFERRALS, "SIGTERM did not come while work was in hand"
        # drained: everything the finished batches produced was published before the exit
        assert store.pending_outbox(1) == []
        async with TopicReader(kafka_bootstrap, f"{prefix}welfare.{WELFARE}.referrals") as reader:
            assert await reader.total() == released_at_stop

        again = HubProcess(env, ARTIFACTS / "sigterm-second.log")
        await again.start()
        try:
            await until(
                lambda: store.count("releases") == REFERRALS and not store.pending_outbox(1),
                timeout=120,
                what="every release, published",
            )
        finally:
            assert await again.terminate() == 0
    finally:
        store.dispose()

    async with TopicReader(kafka_bootstrap, f"{prefix}welfare.{WELFARE}.referrals") as reader:
        seen = Counter(dict(r.headers)["ce_id"].decode() for r in await reader.everything())
    assert set(seen) == expected
    assert max(seen.values()) == 1, {k: v for k, v in seen.items() if v > 1}
    print(f"SIGTERM drain: {released_at_stop} of {REFERRALS} released before the stop, rest after")
