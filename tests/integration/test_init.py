"""`schakel init` (the deployment's one-shot step) on a real broker and a real store: every
topic of CONTRACT §2 with the configured partitions, the store migrated, idempotent; a new
participant gets its topic on the next run; a bad participants file creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.settings import DEMO_PARTICIPANTS
from tests.integration.helpers import unique_prefix

ROOT = Path(__file__).resolve().parents[2]

# CONTRACT §2 for the demo participants, written out rather than derived from the code.
DEMO_TOPICS = {
    "referral-created",
    "consent-granted",
    "consent-withdrawn",
    "feedback-returned",
    "dead-letter",
    "audit",
    "welfare.welzijn-hoogeveen.referrals",
    "welfare.welzijn-de-wolden.referrals",
    "his.praktijk-de-linde.feedback",
    "his.praktijk-het-anker.feedback",
    "wmo.0118.registrations",
    "wmo.1690.registrations",
}
MARKER = {"hub-epoch": 1}  # the hub's own marker topic, one partition (README Design)

NEW_WELFARE = """
[[participant]]
id = "welzijn-midden-drenthe"
name = "Welzijn Midden-Drenthe"
kind = "welfare"
identifiers = [{ system = "http://fhir.nl/fhir/NamingSystem/ura", value = "34567890" }]
serves = ["1731"]
"""


def _init(
    bootstrap: str, store_url: str, prefix: str, participants: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCHAKEL_DATABASE_URL": store_url,
        "SCHAKEL_PARTICIPANTS": str(participants),
        "SCHAKEL_TOPIC_PREFIX": prefix,
        "SCHAKEL_TOPIC_PARTITIONS": "2",
        "SCHAKEL_LOG_FORMAT": "json",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "init"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _topics(bootstrap: str, prefix: str) -> dict[str, int]:
    """Topic -> partition count of every topic with the prefix (List first: describing a
    topic by name would make the embedded broker create it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if n.startswith(prefix)]
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    return {d["topic"].removeprefix(prefix): len(d["partitions"]) for d in described}


async def test_init_creates_every_topic_and_migrates_the_store(
    kafka_bootstrap: str, store_url: str, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    first = _init(kafka_bootstrap, store_url, prefix, DEMO_PARTICIPANTS)
    assert first.returncode == 0, first.stdout + first.stderr
    dialect = "postgresql" if store_url.startswith("postgresql") else "sqlite"
    assert (
        f"13 topics ready (13 created, 0 already there); store {dialect} migrated" in first.stdout
    )
    assert await _topics(kafka_bootstrap, prefix) == dict.fromkeys(DEMO_TOPICS, 2) | MARKER

    engine = sqlalchemy.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"alembic_version", "outbox", "registrations", "audit_log"} <= tables

    again = _init(kafka_bootstrap, store_url, prefix, DEMO_PARTICIPANTS)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "13 topics ready (0 created, 13 already there)" in again.stdout

    extended = tmp_path / "participants.toml"
    extended.write_text(DEMO_PARTICIPANTS.read_text("utf-8") + NEW_WELFARE, "utf-8")
    added = _init(kafka_bootstrap, store_url, prefix, extended)
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"created {prefix}welfare.welzijn-midden-drenthe.referrals" in added.stdout
    assert "14 topics ready (1 created, 13 already there)" in added.stdout
    assert (
        await _topics(kafka_bootstrap, prefix)
        == dict.fromkeys(DEMO_TOPICS | {"welfare.welzijn-midden-drenthe.referrals"}, 2) | MARKER
    )


async def _config(bootstrap: str, topic: str, key: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [resource] = response.resources
    return next((entry[1] for entry in resource[4] if entry[0] == key), None)


async def test_the_dead_letter_and_audit_topics_get_the_configs_they_need(
    kafka_bootstrap: str, store_url: str
) -> None:
    """A dead letter is an inbound record of up to SCHAKEL_MAX_MESSAGE_BYTES plus headers:
    its topic is created to take twice that and 64 KiB (Apache Kafka's default, about 1 MB,
    refused one near the limit). The audit topic, which anchors the audit chain, is kept
    for good (retention.ms -1). An existing topic set lower is reported, not changed."""
    prefix = unique_prefix()
    done = _init(kafka_bootstrap, store_url, prefix, DEMO_PARTICIPANTS)
    assert done.returncode == 0, done.stdout + done.stderr
    wanted = str(2 * 1_000_000 + 65_536)
    assert await _config(kafka_bootstrap, f"{prefix}dead-letter", "max.message.bytes") == wanted
    assert await _config(kafka_bootstrap, f"{prefix}audit", "max.message.bytes") is None
    # the audit topic anchors the chain (audit verify): kept for good
    assert await _config(kafka_bootstrap, f"{prefix}audit", "retention.ms") == "-1"
    assert await _config(kafka_bootstrap, f"{prefix}dead-letter", "retention.ms") is None
    assert "warning" not in done.stderr

    older = unique_prefix()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    f"{older}dead-letter", 2, 1, topic_configs={"max.message.bytes": "1048588"}
                ),
                NewTopic(f"{older}audit", 2, 1, topic_configs={"retention.ms": "604800000"}),
            ]
        )
    finally:
        await admin.close()
    again = _init(kafka_bootstrap, store_url, older, DEMO_PARTICIPANTS)
    assert again.returncode == 0, again.stdout + again.stderr
    said = " ".join(again.stderr.split())
    assert f"{older}dead-letter has max.message.bytes=1048588, not the {wanted}" in said
    assert f"{older}audit has retention.ms=604800000, not the -1" in said
    assert await _config(kafka_bootstrap, f"{older}dead-letter", "max.message.bytes") == "1048588"


async def test_init_with_a_bad_participants_file_creates_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    bad = tmp_path / "participants.toml"
    # A second welfare organisation for Hoogeveen (0118): routing would be ambiguous.
    bad.write_text(
        DEMO_PARTICIPANTS.read_text("utf-8") + NEW_WELFARE.replace('"1731"', '"0118"'), "utf-8"
    )
    result = _init(kafka_bootstrap, f"sqlite:///{tmp_path / 'store.db'}", prefix, bad)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "municipality 0118 is served by" in result.stderr.replace("\n", "")
    assert await _topics(kafka_bootstrap, prefix) == {}
