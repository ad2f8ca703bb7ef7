"""The cheaper parts of a log line write what structlog's own would: the time stamp
(`iso_utc`), the exception (`format_exc_info`) and an event's fields (`_logged_fields`)."""

from __future__ import annotations

import enum
import io
import random
import time
import types
import typing
from datetime import UTC, datetime
from typing import Any, get_args, get_origin

import orjson
import pytest
import structlog
from pydantic import BaseModel, field_serializer

from adapters.logging import format_exc_info, get_logger, iso_utc
from schemas import registration
from services.pipeline import _LOGGED, _OUTCOMES, _logged_fields, _plain_logged


def _structlog_stamp(ns: int) -> str:
    """What `TimeStamper(fmt="iso", utc=True)` writes at `ns`: `datetime.now(UTC)` there
    (which drops the nanoseconds below a microsecond), `isoformat()`, "Z"."""
    moment = datetime.fromtimestamp(ns // 10**9, UTC).replace(microsecond=ns // 1000 % 10**6)
    return moment.isoformat().replace("+00:00", "Z")


def test_the_time_stamp_is_structlogs_at_every_instant() -> None:
    rng = random.Random(7)
    second = 1_796_000_000 * 10**9  # 2026-11
    instants = [
        second,  # a whole second: no fraction, as isoformat
        second + 999,  # below a microsecond: still a whole second
        second + 1_000,
        second + 999_999_999,
        second + 10**9,  # the next second: the cached text replaced
        second + 500_000_000,  # back again
        0,
        946_684_799 * 10**9 + 999_999_000,  # 1999-12-31T23:59:59.999999
        4_102_444_800 * 10**9,  # 2100-01-01
    ]
    instants += [rng.randrange(946_684_800, 4_102_444_800) * 10**9 for _ in range(200)]
    instants += [rng.randrange(946_684_800 * 10**9, 4_102_444_800 * 10**9) for _ in range(2000)]
    instants += [second + rng.randrange(10**9) for _ in range(200)]  # within one second
    for ns in instants:
        assert iso_utc(ns) == _structlog_stamp(ns), ns


def test_a_line_is_stamped_with_the_moment_it_was_written(log_capture: io.StringIO) -> None:
    before = time.time_ns() // 1000 * 1000
    get_logger("test").info("stamped")
    after = time.time_ns()
    (line,) = [orjson.loads(x) for x in log_capture.getvalue().splitlines()]
    stamp = line["timestamp"]
    assert stamp.endswith("Z") and "+" not in stamp
    written = datetime.fromisoformat(stamp[:-1] + "+00:00")
    assert before <= int(written.timestamp()) * 10**9 + written.microsecond * 1000 <= after


def test_the_exception_is_formatted_as_structlog_does_and_only_where_asked() -> None:
    try:
        raise ValueError("kapot")
    except ValueError as exc:
        caught = exc
        asked: list[dict[str, Any]] = [
            {"event": "x", "exc_info": True},
            {"event": "x", "exc_info": caught},
            {"event": "x", "exc_info": (type(caught), caught, caught.__traceback__)},
        ]
        for given in asked:
            ours = format_exc_info(None, "error", dict(given))
            assert ours == structlog.processors.format_exc_info(None, "error", dict(given))
            assert "exc_info" not in ours
            assert "ValueError: kapot" in ours["exception"]
    for given in ({"event": "x"}, {"event": "x", "exc_info": False}, {"event": "x", "a": 1}):
        ours = format_exc_info(None, "info", dict(given))
        assert ours == structlog.processors.format_exc_info(None, "info", dict(given))
        assert "exception" not in ours


def test_a_logged_exception_carries_its_traceback(log_capture: io.StringIO) -> None:
    try:
        raise KeyError("zoek")
    except KeyError:
        get_logger("test").exception("failed")
    (line,) = [orjson.loads(x) for x in log_capture.getvalue().splitlines()]
    assert "Traceback" in line["exception"] and "KeyError: 'zoek'" in line["exception"]
    assert line["level"] == "error"


def _value(annotation: Any, name: str) -> Any:
    """A valid value of `annotation` for field `name` (the events' field types)."""
    if annotation is str:
        return f"{name}-7"
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return _value(next(a for a in get_args(annotation) if a is not type(None)), name)
    if get_origin(annotation) is typing.Literal:
        return get_args(annotation)[0]
    if get_origin(annotation) in (frozenset, tuple):
        return get_origin(annotation)()
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return next(iter(annotation))
    return {datetime: datetime(2026, 12, 6, 9, 30, tzinfo=UTC), bool: True, int: 3}[annotation]


EVENTS = [getattr(registration, name) for name in _OUTCOMES]


@pytest.mark.parametrize("kind", EVENTS, ids=lambda k: k.__name__)
def test_an_events_logged_fields_are_its_dump(kind: type[BaseModel]) -> None:
    event = kind(**{n: _value(f.annotation, n) for n, f in kind.model_fields.items()})
    assert _plain_logged(kind)  # the hub's own events take the cheap way
    ours = _logged_fields(event)  # type: ignore[arg-type]
    assert list(ours.items()) == list(event.model_dump(include=_LOGGED).items())
    assert ours  # every event logs an id
    if "practice_id" in kind.model_fields and not kind.model_fields["practice_id"].is_required():
        without = kind(
            **{n: _value(f.annotation, n) for n, f in kind.model_fields.items()}
            | {"practice_id": None}
        )
        assert _logged_fields(without) == without.model_dump(include=_LOGGED)  # type: ignore[arg-type]


class _Status(enum.Enum):
    OPEN = 1


class _Numbered(BaseModel):
    referral_id: str
    status: _Status


class _Shown(BaseModel):
    referral_id: str

    @field_serializer("referral_id")
    def _shown(self, value: str) -> str:
        return value.upper()


@pytest.mark.parametrize(
    "event",
    [_Numbered(referral_id="r-1", status=_Status.OPEN), _Shown(referral_id="r-2")],
    ids=["a field not text", "a field serialiser"],
)
def test_any_other_event_is_dumped(event: BaseModel) -> None:
    assert _plain_logged(type(event)) == ()  # type: ignore[arg-type]
    assert _logged_fields(event) == event.model_dump(include=_LOGGED)  # type: ignore[arg-type]
