"""The bench's paced sender (issue #9) keeps to its schedule: it never waits for the
broker's acknowledgements between two sends, and a send the broker refused still fails
the run. The producer is a stand-in here; the smoke run drives the real one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench import clients
from bench.workload import Message

COUNT = 2_500  # past the sender's check every 1,000 sends, twice


class _Producer:
    """Acknowledges nothing until the last message was handed over (a broker that answers
    late), or fails the send numbered `fail_at`."""

    def __init__(self, total: int, fail_at: int | None = None) -> None:
        self.total, self.fail_at = total, fail_at
        self.futures: list[asyncio.Future[Any]] = []
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, *, key: bytes, headers: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(self.futures) == self.fail_at:
            future.set_exception(RuntimeError("refused by the broker"))
        self.futures.append(future)
        if len(self.futures) == self.total:
            for waiting in self.futures:
                if not waiting.done():
                    waiting.set_result(None)
        return future


def _messages(n: int) -> list[Message]:
    return [Message("t", f"k{i}".encode(), b"v", ()) for i in range(n)]


def test_the_sender_does_not_wait_for_acknowledgements_on_its_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _Producer(COUNT)
    monkeypatch.setattr(clients, "producer", lambda *_a, **_k: fake)
    # Waiting for an acknowledgement before the last send would wait forever.
    paced = asyncio.run(asyncio.wait_for(clients.pace("unused", _messages(COUNT), 1e6), 10))
    assert len(paced.scheduled) == COUNT
    assert all(f.done() for f in fake.futures) and fake.stopped


def test_a_refused_send_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Producer(COUNT, fail_at=10)
    monkeypatch.setattr(clients, "producer", lambda *_a, **_k: fake)
    with pytest.raises(RuntimeError, match="refused by the broker"):
        asyncio.run(asyncio.wait_for(clients.pace("unused", _messages(COUNT), 1e6), 10))
    assert len(fake.futures) <= 1_000  # said at the first check, not after every send
    assert fake.stopped
