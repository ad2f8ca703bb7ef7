"""The reader behind `schakel replay` and the outbox check, on the real broker: records in any
order the caller asks for, one poll answering every partition, and a partition the caller
is not reading yet paused once its buffer is full."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from adapters.broker import reading
from adapters.broker.admin import TopicSpec, delete_topics, ensure_topics
from adapters.broker.reading import PartitionReader, TopicPartition

PARTITIONS = 4
PER_PARTITION = 600
VALUE = 5_000  # bytes: 3 MB a partition, more than one fetch answer holds on Kafka


async def _fill(bootstrap: str) -> str:
    topic = f"t{uuid.uuid4().hex[:10]}.reader"
    await ensure_topics(bootstrap, [TopicSpec(topic, PARTITIONS)])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=262_144
    )
    await producer.start()
    try:
        sends = [
            await producer.send(
                topic, f"{p}:{i}".encode().ljust(VALUE, b"."), key=f"{p}".encode(), partition=p
            )
            for i in range(PER_PARTITION)
            for p in range(PARTITIONS)
        ]
        for sent in sends:
            await sent
    finally:
        await producer.stop()
    return topic


class _Polls:
    """Each poll of the reader: the partitions paused when it began, and what it brought."""

    def __init__(self, reader: PartitionReader) -> None:
        self.polls: list[tuple[set[TopicPartition], dict[TopicPartition, int]]] = []
        getmany = reader.consumer.getmany

        async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            paused = set(reader.consumer.paused())
            batch = await getmany(*args, **kwargs)
            self.polls.append((paused, {tp: len(records) for tp, records in batch.items()}))
            return batch

        reader.consumer.getmany = counted  # type: ignore[method-assign]


async def test_reading_in_any_order_gets_every_record_with_few_polls(kafka_bootstrap: str) -> None:
    topic = await _fill(kafka_bootstrap)
    try:
        async with PartitionReader(kafka_bootstrap, "test-reader") as reader:
            polls = _Polls(reader)
            partitions = reader.partitions([topic])
            assert len(partitions) == PARTITIONS
            await reader.assign(partitions)
            reader.seek(await reader.beginnings())
            # Round robin over the partitions, as a processing log interleaves them, with
            # every tenth record skipped (applied twice live, say): the reader returns
            # exactly the records asked for.
            taken = []
            for i in range(PER_PARTITION):
                for tp in partitions:
                    if i % 10 == 9:
                        continue
                    record = await reader.take(tp, i)
                    assert record is not None, (tp, i)
                    taken.append((tp.partition, record.offset, record.value[:12]))
            assert taken == [
                (p, i, f"{p}:{i}".encode().ljust(12, b"."))
                for i in range(PER_PARTITION)
                for p in range(PARTITIONS)
                if i % 10 != 9
            ]
            # Past the end: nothing, and the partition counts as read to its end; the rest
            # of the others is their skipped last record.
            assert await reader.take(partitions[0], PER_PARTITION) is None
            assert await reader.rest(partitions[0]) == []
            for tp in partitions[1:]:
                assert [r.offset for r in await reader.rest(tp)] == [PER_PARTITION - 1]
        # A poll asks for every partition (a poll per partition waits for the broker once
        # per partition and refill: the replay spent half its time there).
        assert max(len(brought) for _paused, brought in polls.polls) == PARTITIONS
    finally:
        await delete_topics(kafka_bootstrap, [topic])


async def test_a_partition_far_ahead_of_the_reader_is_paused(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "READ_AHEAD", 20)
    topic = await _fill(kafka_bootstrap)
    try:
        async with PartitionReader(kafka_bootstrap, "test-reader") as reader:
            polls = _Polls(reader)
            partitions = reader.partitions([topic])
            await reader.assign(partitions)
            reader.seek(await reader.beginnings())
            # One partition after the other: the others wait in their buffers meanwhile.
            for tp in partitions:
                for i in range(PER_PARTITION):
                    record = await reader.take(tp, i)
                    assert record is not None and record.offset == i
            for tp in partitions:
                assert await reader.rest(tp) == []
            assert reader.exhausted == set(partitions)
        # Partitions waiting with full buffers were paused, and no poll brought records
        # for a partition paused when it began (its buffer stopped growing).
        assert any(paused for paused, _brought in polls.polls)
        for paused, brought in polls.polls:
            assert not paused & set(brought), (paused, brought)
    finally:
        await delete_topics(kafka_bootstrap, [topic])
