"""CloudEvents 1.0 Kafka binary-mode headers and W3C trace context (CONTRACT §2)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from schemas.messages import Headers
from schemas.topics import CE_SOURCE, CE_SPECVERSION, Header

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16  # all-zero ids are invalid (W3C trace context)


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is UTC:  # the hub's clock: "+00:00" after 23 characters
        return moment.isoformat(timespec="milliseconds")[:23] + "Z"
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parsed(traceparent: str | None) -> re.Match[str] | None:
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip())
    if match and match[1] != "ff" and match[2] != _NO_TRACE and match[3] != _NO_SPAN:
        return match
    return None


def valid_traceparent(traceparent: str | None) -> bool:
    """A W3C traceparent that can be continued (version not ff, ids not all zero)."""
    return _parsed(traceparent) is not None


def continue_trace(traceparent: str | None) -> str:
    """A child span of the inbound trace when it has a valid one, else a new trace."""
    match = _parsed(traceparent)
    if match is not None:
        return f"00-{match[2]}-{secrets.token_hex(8)}-{match[4]}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def ce_headers(
    *,
    ce_id: str,
    ce_type: str,
    time: datetime,
    traceparent: str,
    subject: str | None = None,
    content_type: str = "application/json",
) -> Headers:
    headers: list[tuple[str, bytes | None]] = [
        (Header.CE_SPECVERSION, CE_SPECVERSION.encode()),
        (Header.CE_ID, ce_id.encode()),
        (Header.CE_SOURCE, CE_SOURCE.encode()),
        (Header.CE_TYPE, ce_type.encode()),
        (Header.CE_TIME, rfc3339(time).encode()),
        (Header.CONTENT_TYPE, content_type.encode()),
        (Header.TRACEPARENT, traceparent.encode()),
    ]
    if subject is not None:
        headers.append((Header.CE_SUBJECT, subject.encode()))
    return tuple(headers)
