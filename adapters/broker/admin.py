"""Topic administration and broker facts, over aiokafka's admin client.

Topics are created explicitly, idempotently, before any producer or consumer runs: the
embedded broker auto-creates any topic a Metadata request names, with 4 partitions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

TOPIC_ALREADY_EXISTS = 36
TANSU_CLUSTER_ID = "tansu_cluster"


class BrokerError(Exception):
    """The broker is unreachable or refused a topic; the message says which and why."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    min_configs: tuple[tuple[str, int], ...] = ()
    """Numeric topic configs set at creation, e.g. `max.message.bytes`, `retention.ms`
    (-1: unlimited); an existing topic with a lower value is reported
    (`TopicReport.config_too_low`), not changed (not every broker can alter a topic's
    config: BROKER.md)."""


@dataclass(frozen=True)
class TopicReport:
    created: tuple[str, ...]
    existing: tuple[str, ...]
    partition_mismatch: tuple[tuple[str, int, int], ...]  # name, wanted, actual
    config_too_low: tuple[tuple[str, str, int, int], ...] = ()  # name, key, wanted, actual


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    broker_ids: tuple[int, ...]

    @property
    def is_embedded(self) -> bool:
        """Tansu reports its own cluster id; its group timings differ (BROKER.md §3)."""
        return self.cluster_id == TANSU_CLUSTER_ID


def _admin(bootstrap: str, timeout_ms: int) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, client_id="schakel-admin"
    )


async def cluster_info(bootstrap: str, timeout_ms: int = 10_000) -> ClusterInfo:
    """One Metadata request; raises `BrokerError` when the broker does not answer."""
    admin = _admin(bootstrap, timeout_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout_ms / 1000)
        info = await asyncio.wait_for(admin.describe_cluster(), timeout_ms / 1000)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerError(f"no Kafka broker answers at {bootstrap}: {type(exc).__name__}") from None
    finally:
        await admin.close()
    return ClusterInfo(
        cluster_id=info.get("cluster_id"),
        broker_ids=tuple(b["node_id"] for b in info.get("brokers", ())),
    )


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], timeout_ms: int = 15_000
) -> TopicReport:
    """Create each topic unless it exists; report partition counts that differ from the
    wanted ones (they cannot be changed later on every broker, so we say so)."""
    wanted = {s.name: s for s in specs}
    if not wanted:
        return TopicReport((), (), ())
    admin = _admin(bootstrap, timeout_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout_ms / 1000)
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    s.partitions,
                    s.replication_factor,
                    topic_configs={key: str(value) for key, value in s.min_configs},
                )
                for s in wanted.values()
            ],
            timeout_ms=timeout_ms,
        )
        created, existing = [], []
        for error in response.topic_errors:
            name, code = error[0], error[1]
            if code == 0:
                created.append(name)
            elif code == TOPIC_ALREADY_EXISTS:
                existing.append(name)
            else:
                message = error[2] if len(error) > 2 and error[2] else f"error code {code}"
                raise BrokerError(f"cannot create topic {name}: {message}")
        described = await admin.describe_topics(list(wanted))
        too_low = await _configs_too_low(
            admin, [wanted[name] for name in existing if wanted[name].min_configs]
        )
    except KafkaConnectionError:
        raise BrokerError(f"no Kafka broker answers at {bootstrap}") from None
    finally:
        await admin.close()
    mismatch = []
    for topic in described:
        spec = wanted.get(topic["topic"])
        actual = len(topic.get("partitions") or ())
        if spec is not None and actual != spec.partitions:
            mismatch.append((spec.name, spec.partitions, actual))
    return TopicReport(
        tuple(sorted(created)), tuple(sorted(existing)), tuple(mismatch), tuple(too_low)
    )


def _below(actual: int, wanted: int) -> bool:
    """-1 is Kafka's "unlimited" (e.g. `retention.ms`)."""
    if wanted == -1:
        return actual != -1
    return actual != -1 and actual < wanted


async def _configs_too_low(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec]
) -> list[tuple[str, str, int, int]]:
    """(topic, key, wanted, actual) for each existing topic's config below its spec's. A
    config the broker does not report (the embedded one reports only those set) is left
    out: its value is the broker's default, unknown here."""
    if not specs:
        return []
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    )
    actual: dict[tuple[str, str], str] = {}
    for response in responses:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            for entry in entries:
                actual[(name, entry[0])] = entry[1]
    low = []
    for spec in specs:
        for key, value in spec.min_configs:
            found = actual.get((spec.name, key))
            if found is None or not found.lstrip("-").isdigit():
                continue
            if _below(int(found), value):
                low.append((spec.name, key, value, int(found)))
    return low


async def delete_topics(bootstrap: str, names: Iterable[str], timeout_ms: int = 15_000) -> None:
    admin = _admin(bootstrap, timeout_ms)
    try:
        await admin.start()
        await admin.delete_topics(list(names), timeout_ms=timeout_ms)
    finally:
        await admin.close()
