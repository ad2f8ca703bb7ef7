"""The relay's producer does not linger (`PRODUCER_LINGER_MS`): a pass's rows still share
produce requests, since the pass appends them all before the producer's sender runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka.protocol.produce import ProduceRequest

from adapters.broker.outbox import PRODUCER_LINGER_MS, OutboxRelay, make_producer
from schemas.messages import OutboundMessage
from tests.integration.helpers import TopicReader, relay_topic_and_store


async def test_a_pass_of_many_rows_goes_in_few_requests(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    assert PRODUCER_LINGER_MS == 0
    topic, store = await relay_topic_and_store(kafka_bootstrap, tmp_path)
    rows = 60
    for i in range(rows):
        message = OutboundMessage(
            f"b-{i}", topic, f"VERW-{i % 3}".encode(), f"body {i}".encode(), (("ce_id", b"x"),)
        )
        store.run(lambda tx, m=message: tx.add_outbox(m))
    relay = OutboxRelay(store, make_producer(kafka_bootstrap, 1_048_576), bootstrap=kafka_bootstrap)
    await relay.producer.start()
    requests: list[Any] = []
    send = relay.producer.client.send

    async def counted(node_id: int, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, ProduceRequest):
            requests.append(request)
        return await send(node_id, request, **kwargs)

    relay.producer.client.send = counted  # type: ignore[method-assign]
    try:
        assert await relay.publish_pending() == rows
    finally:
        await relay.producer.stop()
        await relay.release_lock()
    # one pass: the first send may wait for the topic's metadata, so allow a second request
    assert 1 <= len(requests) <= 2, f"{len(requests)} produce requests for one pass"
    async with TopicReader(kafka_bootstrap, topic) as reader:
        assert len(await reader.read(rows)) == rows
    store.dispose()
