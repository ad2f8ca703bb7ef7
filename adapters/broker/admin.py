"""Topic administration and broker facts, over aiokafka's admin client.

Topics are created explicitly, idempotently, before any producer or consumer runs: the
embedded broker auto-creates any topic a Metadata request names, with 4 partitions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
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


@dataclass(frozen=True)
class TopicReport:
    created: tuple[str, ...]
    existing: tuple[str, ...]
    partition_mismatch: tuple[tuple[str, int, int], ...]  # name, wanted, actual


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
            [NewTopic(s.name, s.partitions, s.replication_factor) for s in wanted.values()],
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
    return TopicReport(tuple(sorted(created)), tuple(sorted(existing)), tuple(mismatch))


async def delete_topics(bootstrap: str, names: Iterable[str], timeout_ms: int = 15_000) -> None:
    admin = _admin(bootstrap, timeout_ms)
    try:
        await admin.start()
        await admin.delete_topics(list(names), timeout_ms=timeout_ms)
    finally:
        await admin.close()
