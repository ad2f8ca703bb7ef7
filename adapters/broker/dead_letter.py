"""Dead letters (CONTRACT §6): the original bytes and headers, unchanged, plus the reason."""

from __future__ import annotations

from adapters.redaction import redact
from schemas.errors import SchakelError
from schemas.ids import dead_letter_id
from schemas.messages import InboundRecord, OutboundMessage
from schemas.topics import Header

MAX_DETAIL = 500


def dead_letter(record: InboundRecord, error: SchakelError, topic: str) -> OutboundMessage:
    """Its id derives from the record's position: a re-read of the same record yields the
    same dead letter, and the outbox keeps one."""
    detail = redact(error.detail)[:MAX_DETAIL]
    added = (
        (Header.ERROR_REASON, error.reason.encode()),
        (Header.ERROR_DETAIL, detail.encode("utf-8", "replace")),
        (Header.ORIGINAL_TOPIC, record.topic.encode()),
        (Header.ORIGINAL_PARTITION, str(record.partition).encode()),
        (Header.ORIGINAL_OFFSET, str(record.offset).encode()),
    )
    return OutboundMessage(
        message_id=dead_letter_id(
            record.topic, record.partition, record.offset, record.timestamp_ms
        ),
        topic=topic,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers) + added,
    )
