"""A recovery from a broker's loss that fails is finished on the next check, even when the
marker topic is back by then (another instance wrote it): the failed instance has stopped
its consumers already, and before, it never started them again (a review found it, with
two instances recovering at once and one losing on the store). The admin client is a
stand-in answering the topic list; recovery against a real broker is in
tests/integration/test_broker_loss.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from adapters.broker import watch as watch_module
from adapters.broker.watch import BrokerWatch

T0 = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
MARKER = "hub-epoch"


class _Admin:
    """The topic list of a broker that lost the marker once, then got it back from
    another instance."""

    def __init__(self) -> None:
        self.answers = [set(), {MARKER}, {MARKER}, {MARKER}]

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> set[str]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_failed_recovery_is_finished_on_the_next_check(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = _Admin()
    monkeypatch.setattr(watch_module, "_admin", lambda _bootstrap: admin)
    calls: list[datetime] = []

    async def on_lost(last_good: datetime) -> None:
        calls.append(last_good)
        if len(calls) == 1:
            raise RuntimeError("could not serialize access")  # the store's refusal

    async def check() -> BrokerWatch:
        watch = BrokerWatch(
            "unused:9092", MARKER, on_lost=on_lost, interval_seconds=0.01, clock=lambda: T0
        )

        async def mark() -> None:  # writing the marker needs a broker; not here
            return None

        watch.mark = mark  # type: ignore[method-assign]
        watch.start()
        await asyncio.wait_for(watch.recovered.wait(), 5)
        await watch.stop()
        return watch

    watch = asyncio.run(check())
    assert calls == [T0, T0]  # tried again, though the marker was back
    assert watch.recoveries == 1
