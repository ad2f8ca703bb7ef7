"""Consumer lag per topic and group: the broker's end offsets minus the group's committed
offsets, summed over the topic's partitions (for the `/metrics` endpoint).

Committed offsets come from the admin client's OffsetFetch with the partitions named (the
embedded broker cannot decode the "all partitions" form, BROKER.md §3); a partition the
group never committed counts from its first offset, as the hub's consumers start there
(`auto_offset_reset=earliest`).

The embedded broker's ListOffsets answers the base offset of the last record batch plus
one, so after a multi-record batch its end offset undercounts: the lag it gives can read
lower than the truth, and a committed offset can be past the reported end. Lag is
therefore clamped at 0 per partition; it is never reported negative. On Apache Kafka the
end offsets are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


@dataclass(frozen=True)
class GroupLag:
    topic: str
    group: str
    lag: int
    """Records not yet committed by the group, summed over partitions (each at least 0)."""
    committed: int
    """The group's committed offsets summed over partitions (0 where none)."""
    partitions: int


def partition_lag(end: int, committed: int | None, beginning: int) -> int:
    """One partition: from the committed offset (or the first one) to the end, never < 0."""
    start = committed if committed is not None and committed >= 0 else beginning
    return max(0, end - start)


async def consumer_lag(
    bootstrap: str, subscriptions: Iterable[tuple[str, str]], timeout: float = 5.0
) -> list[GroupLag]:
    """Lag of each (topic, group); topics the broker does not have are left out (asking for
    them by name would make the embedded broker create them)."""
    wanted = list(dict.fromkeys(subscriptions))
    return await asyncio.wait_for(_measure(bootstrap, wanted), timeout)


async def _measure(bootstrap: str, wanted: list[tuple[str, str]]) -> list[GroupLag]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="schakel-lag"
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="schakel-lag")
    try:
        await consumer.start()
        await admin.start()
        by_topic = {
            topic: [TopicPartition(topic, p) for p in sorted(parts)]
            for topic in {t for t, _ in wanted}
            if (parts := consumer.partitions_for_topic(topic))
        }
        everything = [tp for tps in by_topic.values() for tp in tps]
        if not everything:
            return []
        ends = await consumer.end_offsets(everything)
        beginnings = await consumer.beginning_offsets(everything)
        result = []
        for topic, group in wanted:
            partitions = by_topic.get(topic)
            if not partitions:
                continue
            offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
            committed = {tp: offsets[tp].offset if tp in offsets else None for tp in partitions}
            result.append(
                GroupLag(
                    topic=topic,
                    group=group,
                    lag=sum(
                        partition_lag(ends[tp], committed[tp], beginnings[tp]) for tp in partitions
                    ),
                    committed=sum(max(0, c or 0) for c in committed.values()),
                    partitions=len(partitions),
                )
            )
        return result
    finally:
        await admin.close()
        await consumer.stop()
