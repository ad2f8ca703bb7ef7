"""`schakel run` as a real process: SIGKILL it while a referral waits for consent, start it
again on the same database and broker, and the referral is still there."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.broker.client import Sender, inbound_headers
from schemas import topics as names
from services.demo.samples import DEMO_BSN, consent_resource, referral_bundle, to_bytes
from services.settings import DEMO_PARTICIPANTS
from tests.conftest import ARTIFACTS
from tests.integration.helpers import TopicReader, unique_prefix

SCHAKEL = [sys.executable, "-m", "services.cli", "run"]
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


class HubProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log_path = env, log
        log.write_bytes(b"")
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *SCHAKEL,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
        )

    async def wait_for(self, **fields: Any) -> dict[str, Any]:
        """Reads the process's JSON log lines until one has all `fields`."""
        assert self.proc is not None and self.proc.stdout is not None

        async def read() -> dict[str, Any]:
            while True:
                raw = await self.proc.stdout.readline()  # type: ignore[union-attr]
                if not raw:
                    raise AssertionError(
                        f"hub exited ({self.proc.returncode}); log in {self.log_path}"
                    )
                with self.log_path.open("ab") as f:
                    f.write(raw)
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                self.lines.append(line)
                if all(line.get(k) == v for k, v in fields.items()):
                    return line

        return await asyncio.wait_for(read(), TIMEOUT)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    async def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.communicate(), TIMEOUT)
        return self.proc.returncode or 0


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
