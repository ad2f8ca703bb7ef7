from __future__ import annotations

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
    for bad in (None, "", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01"):
        fresh = continue_trace(bad)
        assert len(fresh) == 55 and fresh.startswith("00-")
