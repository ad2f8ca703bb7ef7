"""Deterministic identifiers: the same cause always yields the same id, so a re-delivered
or replayed input rebuilds the same registration and the same outbound message ids."""

from __future__ import annotations

import hashlib
import uuid

NAMESPACE = uuid.UUID("6f1c3f0e-4a57-4c55-9d0b-5c6861b3e1a1")
_NAMESPACE_BYTES = NAMESPACE.bytes


def message_id(*parts: str) -> str:
    """`str(uuid.uuid5(NAMESPACE, "|".join(parts)))`, without building a `UUID` (the hub
    makes several per referral; this takes less than half the time)."""
    digest = bytearray(
        hashlib.sha1(  # noqa: S324 - UUID version 5 is defined on SHA-1; an id, not a secret
            _NAMESPACE_BYTES + "|".join(parts).encode("utf-8"), usedforsecurity=False
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def registration_id_for(referral_id: str, recipient_id: str) -> str:
    return message_id("registration", referral_id, recipient_id)


def dead_letter_id(topic: str, partition: int, offset: int, timestamp_ms: int | None) -> str:
    """Position plus broker timestamp: a broker that lost its log restarts offsets at 0,
    and a new record at an old offset must not be mistaken for the old one."""
    return message_id("dead-letter", topic, str(partition), str(offset), str(timestamp_ms))


def release_id(referral_id: str, recipient_id: str) -> str:
    return message_id("released", referral_id, recipient_id)


def feedback_id(referral_id: str, organisation: str, status: str, occurred_at: str) -> str:
    """The same feedback message, delivered twice, is one feedback."""
    return message_id("feedback", referral_id, organisation, status, occurred_at)


def overdue_id(registration_id: str, audience: str) -> str:
    return message_id("overdue", registration_id, audience)
