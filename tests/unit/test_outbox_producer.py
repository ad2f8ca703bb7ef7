"""The relay's producer batches (issue #9): a send that finds its partition's batch full
waits until that batch goes out, after the broker answered the request in flight, so a
relay pass of many rows must fit in few batches. With aiokafka's default 16 KiB batches a
pass of releases took a broker round trip per few rows (the bench's latency phase fell
seconds behind at 1,000 consents/s)."""

from __future__ import annotations

from adapters.broker.outbox import make_producer, relay_producer

OUTPUT = b"x" * 2_000  # about a welfare intake or an AuditEvent, as the hub renders them


async def _fits(producer, value: bytes) -> int:  # type: ignore[no-untyped-def]
    """How many records of `value` the producer's batch for one partition holds."""
    batch = producer.create_batch()  # the builder its sends append to
    n = 0
    while batch.append(key=b"registration-id", value=value, timestamp=None) is not None:
        n += 1
    await producer.stop()  # never started: nothing to flush
    return n


async def test_one_batch_holds_a_hundred_typical_outputs() -> None:
    # a pass (up to 500 rows) spreads over several topics and partitions: 100 per batch
    # leaves it a round trip or two, not one per eight rows
    assert await _fits(relay_producer("127.0.0.1:9", 1_000_000), OUTPUT) >= 100


async def test_a_batch_never_exceeds_the_request_size() -> None:
    # a small request limit caps the batch (the broker refuses a request above it)
    n = await _fits(make_producer("127.0.0.1:9", 64 * 1024), OUTPUT)
    assert 0 < n * len(OUTPUT) <= 64 * 1024


async def test_a_record_larger_than_a_batch_still_goes_alone() -> None:
    assert await _fits(relay_producer("127.0.0.1:9", 1_000_000), b"y" * 400_000) == 1
