"""Broker-neutral records: what the hub read, and what it will write.

Plain dataclasses so that domain code, storage and broker adapters can share them
without any of them importing a Kafka client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class InboundRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int | None = None

    def header(self, name: str) -> str | None:
        """The last value of a header as text, or None (undecodable values count as absent)."""
        for key, value in reversed(self.headers):
            if key == name and value is not None:
                try:
                    return value.decode("utf-8")
                except UnicodeDecodeError:
                    return None
        return None

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A message the hub will publish, written to the outbox in the same transaction as
    the state change that caused it. `message_id` is deterministic, so re-processing the
    same input yields the same id and the outbox keeps one copy."""

    message_id: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default=())
