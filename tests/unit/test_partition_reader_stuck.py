"""A broker that lost its state can acknowledge records that no fetch returns afterwards
(the end offset counts them). The reader must not wait for them for ever: the outbox
relay's check reads with it, and stalled there for good (a review found it, with the
embedded broker restarted under load). The consumer here is a stand-in that answers as
such a broker does; the reading against a real broker is in
tests/integration/test_partition_reader.py."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.broker import reading
from adapters.broker.reading import PartitionReader, TopicPartition

TP = TopicPartition("welfare.x.referrals", 0)


class _PhantomEnd:
    """Position 0, end offset 1, and no fetch ever returns the record at 0."""

    def __init__(self) -> None:
        self.polls = 0

    def paused(self) -> set[TopicPartition]:
        return set()

    def pause(self, *_: Any) -> None: ...

    def resume(self, *_: Any) -> None: ...

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        self.polls += 1
        await asyncio.sleep(0.001)  # a poll takes time: the test's time limit can act
        return {}

    async def position(self, _tp: TopicPartition) -> int:
        return 0


def test_a_partition_whose_end_cannot_be_read_is_taken_as_read() -> None:
    phantom = _PhantomEnd()

    async def read() -> list[Any]:
        reader = PartitionReader("127.0.0.1:1", "test")  # never started: no connection
        reader.consumer = phantom  # type: ignore[assignment]
        reader.ends = {TP: 1}
        reader.buffers = {TP: reading.deque()}
        return await asyncio.wait_for(reader.rest(TP), timeout=10)

    assert asyncio.run(read()) == []
    assert phantom.polls == reading.STUCK_POLLS
