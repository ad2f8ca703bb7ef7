"""`UtcDateTime` on SQLite converts in one call what SQLAlchemy converts in two; what it
writes and reads must be exactly what SQLAlchemy's own pair writes and reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from adapters.storage.tables import UtcDateTime

SQLITE = sqlite.dialect()
TYPE = UtcDateTime().dialect_impl(SQLITE)
WRITE = TYPE.bind_processor(SQLITE)
READ = TYPE.result_processor(SQLITE, None)
# SQLAlchemy's pair: the decorator's step, then DateTime's text format
REFERENCE_WRITE = TypeDecorator.bind_processor(TYPE, SQLITE)
REFERENCE_READ = TypeDecorator.result_processor(TYPE, SQLITE, None)

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: UTC if minutes == 0 else timezone(timedelta(minutes=minutes))
)
aware = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
)


def test_the_one_call_converters_are_in_use_on_sqlite_only() -> None:
    assert WRITE is not None and "UtcDateTime" in WRITE.__qualname__
    assert READ is not None and "UtcDateTime" in READ.__qualname__
    pg = postgresql.dialect()
    assert "UtcDateTime" not in UtcDateTime().dialect_impl(pg).bind_processor(pg).__qualname__


@given(aware)
def test_written_text_is_sqlalchemys(value: datetime) -> None:
    assert WRITE(value) == REFERENCE_WRITE(value)


@given(aware)
def test_read_back_is_sqlalchemys_and_the_same_instant_in_utc(value: datetime) -> None:
    text = REFERENCE_WRITE(value)
    got = READ(text)
    assert got == REFERENCE_READ(text) == value
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["2026-12-01 13:30:15", "2026-12-01 13:30:15.5", "2026-12-01", "2026-12-01T13:30:15"]
)
def test_text_other_writers_stored_reads_as_sqlalchemy_reads_it(text: str) -> None:
    assert READ(text) == REFERENCE_READ(text)


def test_none_passes_and_a_naive_datetime_is_refused() -> None:
    assert WRITE(None) is None and READ(None) is None
    with pytest.raises(ValueError, match="naive"):
        WRITE(datetime(2026, 12, 1, 12, 0))
