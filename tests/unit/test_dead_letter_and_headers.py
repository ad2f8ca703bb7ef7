from __future__ import annotations

import re

from adapters.broker.cloudevents import continue_trace, trace_id
from adapters.broker.dead_letter import dead_letter
from schemas.errors import InvalidBsnError
from schemas.messages import InboundRecord


def test_dead_letter_keeps_original_bytes_and_headers_and_adds_the_reason() -> None:
    original_headers = (
        ("ce_id", b"abc"),
        ("traceparent", b"00-x"),
        ("bin", b"\xff\x00"),
        ("dup", b"1"),
        ("dup", b"2"),
        ("nul", None),
    )
    record = InboundRecord(
        "acc.referral-created",
        4,
        17,
        b"VERW-1",
        b"\x00not json",
        original_headers,
        1_700_000_000_000,
    )
    message = dead_letter(
        record, InvalidBsnError("Patient.identifier: BSN 123456782 fails"), "acc.dead-letter"
    )
    assert message.topic == "acc.dead-letter"
    assert message.key == b"VERW-1"
    assert message.value == b"\x00not json"
    assert message.headers[: len(original_headers)] == original_headers
    added = dict(message.headers[len(original_headers) :])
    assert added == {
        "schakel-error-reason": b"invalid-bsn",
        "schakel-error-detail": b"Patient.identifier: BSN [BSN] fails",
        "schakel-original-topic": b"acc.referral-created",
        "schakel-original-partition": b"4",
        "schakel-original-offset": b"17",
    }
    # the same record gives the same dead letter id; another timestamp does not
    assert dead_letter(record, InvalidBsnError("x"), "d").message_id == message.message_id
    moved = InboundRecord("acc.referral-created", 4, 17, b"VERW-1", b"", (), 1_700_000_000_001)
    assert dead_letter(moved, InvalidBsnError("x"), "d").message_id != message.message_id


def test_trace_is_continued_or_started() -> None:
    inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    child = continue_trace(inbound)
    assert trace_id(child) == "0af7651916cd43dd8448eb211c80319c"
    assert child != inbound and child.endswith("-01")
    zero_trace = "00-00000000000000000000000000000000-b7ad6b7169203331-01"
    zero_span = "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"
    for bad in (None, "", "garbage", zero_trace, zero_span):
        fresh = continue_trace(bad)
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", fresh), fresh
        assert trace_id(fresh) != "0" * 32, "an all-zero trace id is invalid: a new trace"
        assert fresh.split("-")[2] != "0" * 16
        if bad:
            assert trace_id(fresh) != bad.split("-")[1 if bad.count("-") == 3 else 0]
