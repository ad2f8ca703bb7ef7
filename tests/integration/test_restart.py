"""`schakel run` as a real process: SIGKILL it while a referral waits for consent, start it
again on the same database and broker, and the referral is still there."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.broker.client import Sender, inbound_headers
from schemas import topics as names
from services.demo.samples import DEMO_BSN, consent_resource, referral_bundle, to_bytes
from services.settings import DEMO_PARTICIPANTS
from tests.conftest import ARTIFACTS
from tests.integration.helpers import HubProcess, TopicReader, unique_prefix

SCHAKEL = [sys.executable, "-m", "services.cli", "run"]
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    """The group's committed offset, read without joining the group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_sigkill_loses_no_pending_referral(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = unique_prefix()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SCHAKEL_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}",
        "SCHAKEL_TOPIC_PREFIX": prefix,
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "SCHAKEL_TOPIC_PARTITIONS": "3",
        "SCHAKEL_LOG_FORMAT": "json",
    }
    first = HubProcess(env, ARTIFACTS / "restart-first.log")
    await first.start()
    await first.wait_for(event="hub started")
    async with Sender(kafka_bootstrap) as sender:
        meta = await sender.send(
            f"{prefix}referral-created",
            to_bytes(referral_bundle("VERW-K-1")),
            key=b"VERW-K-1",
            headers=inbound_headers(names.REFERRAL_CREATED),
        )
    await first.wait_for(outcome="waiting-for-consent", referral_id="VERW-K-1")
    # The input offset is committed only after the store transaction: once it is past the
    # referral, the broker will never deliver it again - the store holds the only copy.
    tp = TopicPartition(meta.topic, meta.partition)
    group = f"{prefix}schakel-intake"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while (await _committed(kafka_bootstrap, group, tp) or 0) <= meta.offset:
        assert loop.time() < deadline, "offset never committed"
        await asyncio.sleep(0.1)
    await first.kill()

    second = HubProcess(env, ARTIFACTS / "restart-second.log")
    await second.start()
    try:
        await second.wait_for(event="hub started")
        async with Sender(kafka_bootstrap) as sender:
            await sender.send(
                f"{prefix}consent-granted",
                to_bytes(consent_resource("c-k-1", referral_id="VERW-K-1")),
                key=b"VERW-K-1",
                headers=inbound_headers(names.CONSENT_GRANTED),
            )
        await second.wait_for(outcome="released", referral_id="VERW-K-1")
        async with TopicReader(
            kafka_bootstrap, f"{prefix}welfare.welzijn-hoogeveen.referrals"
        ) as reader:
            (record,) = await reader.read(1)
            assert orjson.loads(record.value)["referral_id"] == "VERW-K-1"
            assert await reader.total() == 1
    finally:
        code = await second.terminate()
    assert code == 0, "SIGTERM ends the hub cleanly"
    for log in (first.log_path, second.log_path):
        text = log.read_text()
        assert DEMO_BSN not in text and "Vries-Bakker" not in text
