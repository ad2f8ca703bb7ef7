"""Table definitions. The migrations in `migrations/versions` create exactly these
(a test compares them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql import ColumnElement, and_, false, true
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (no time zones) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # On SQLite a stored datetime is text. SQLAlchemy converts it in two steps (this type,
    # then DateTime's format); the store does this for about ten values per referral, so
    # the two steps are one call here. Each is checked against SQLAlchemy's own pair when
    # it is built, and SQLAlchemy's pair is kept if they differ.

    def bind_processor(self, dialect: Any) -> Any:
        reference = super().bind_processor(dialect)
        if dialect.name != "sqlite" or reference is None:
            return reference

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is UTC:  # the hub's own clock: "+00:00" after 26 characters
                return value.isoformat(" ", "microseconds")[:26]
            utc = self.process_bind_param(value, dialect)  # refuses a naive one
            return utc.isoformat(" ", "microseconds")  # type: ignore[union-attr]

        return process if _agree(process, reference, _SAMPLES) else reference

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        reference = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite" or reference is None:
            return reference
        parse = datetime.fromisoformat

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            try:
                parsed = parse(value)
            except (TypeError, ValueError):
                return reference(value)  # not the text SQLAlchemy writes: its own parser
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else reference(value)

        write = super().bind_processor(dialect)
        texts = tuple(write(d) for d in _SAMPLES) if write is not None else ()
        return process if _agree(process, reference, texts) else reference


_SAMPLES = (
    datetime(2026, 12, 1, 13, 30, 15, 123456, tzinfo=UTC),
    datetime(2026, 12, 1, 14, 30, 15, 5, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
)


def _agree(fast: Any, reference: Any, samples: tuple[Any, ...]) -> bool:
    return all(fast(s) == reference(s) for s in samples)


# BIGINT on PostgreSQL, INTEGER (the rowid alias, so it autoincrements) on SQLite.
Serial = BigInteger().with_variant(Integer(), "sqlite")

referrals = Table(
    "referrals",
    metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("registration_id", String(36), nullable=False),
    Column("recipient_id", String(40), nullable=False),
    Column("patient_bsn", String(9), nullable=False, index=True),
    Column("body", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # its practice (migration 0010): which practices a registration's referrals came from
    Column("practice_id", String(40), nullable=True),
    Index("ix_referrals_registration_practice", "registration_id", "practice_id"),
)

consents = Table(
    "consents",
    metadata,
    Column("consent_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("kind", String(16), nullable=False, server_default="permit"),
    Column("patient_bsn", String(9), nullable=True, index=True),
    Column("names_referrals", Boolean, nullable=False),
    Column("period_start", UtcDateTime, nullable=True),
    Column("started", Boolean, nullable=False, server_default=true()),
    # the first moment an active consent's period is over, until the timer has acted on it
    Column("expires_at", UtcDateTime, nullable=True),
    Column("body", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)


def _partial_index(name: str, column: Column[Any], where: ColumnElement[bool]) -> None:
    Index(name, column, sqlite_where=where, postgresql_where=where)


# What the timer asks every tick, with the write lock held (SQLite: BEGIN IMMEDIATE), must
# not read the whole history: partial indexes hold only the rows still to act on, so a tick
# reads what is due, however many registrations and consents are past. (Without them the
# tick's scans grew with the store and, held longer than the pipeline's lock wait, sent
# its transactions to the worker thread: bench soak.) The store's queries put these very
# conditions in their WHERE, which is what lets SQLite use a partial index.
CONSENT_NOT_STARTED = consents.c.started.is_(False)
_partial_index("ix_consents_not_started", consents.c.period_start, CONSENT_NOT_STARTED)
CONSENT_EXPIRING = consents.c.expires_at.is_not(None)
_partial_index("ix_consents_expiring", consents.c.expires_at, CONSENT_EXPIRING)


def consent_expires_at(status: str, period_end: datetime | None) -> datetime | None:
    """When the timer ends an active consent: the first moment after its period (which
    includes its `period_end`); None when it has nothing to end."""
    if status != "active" or period_end is None:
        return None
    return period_end + timedelta(microseconds=1)


consent_referrals = Table(
    "consent_referrals",
    metadata,
    Column("consent_id", String(64), primary_key=True),
    Column("referral_id", String(64), primary_key=True, index=True),
)

releases = Table(
    "releases",
    metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("recipient_id", String(40), primary_key=True),
    Column("registration_id", String(36), nullable=False),
    Column("consent_id", String(64), nullable=False),
    Column("released_at", UtcDateTime, nullable=False),
    Column("fingerprint", String(64), nullable=False, server_default=""),
    Column("revoked_at", UtcDateTime, nullable=True),
    # "did another referral of this registration reach this recipient?" on every release
    Index("ix_releases_registration_recipient", "registration_id", "recipient_id"),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

registrations = Table(
    "registrations",
    metadata,
    Column("registration_id", String(36), primary_key=True),
    Column("referral_id", String(64), nullable=False, index=True),
    Column("recipient_id", String(40), nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("patient_bsn", String(9), nullable=True),
    Column("practice_id", String(40), nullable=True),
    Column("contact_due_at", UtcDateTime, nullable=True),
    Column("contact_made_at", UtcDateTime, nullable=True),
    Column("overdue_at", UtcDateTime, nullable=True),
    Column("closed_at", UtcDateTime, nullable=True),
    Column("retain_until", UtcDateTime, nullable=True),
    Index("ix_registrations_patient_recipient", "patient_bsn", "recipient_id"),
)

REGISTRATION_OPEN = and_(
    registrations.c.contact_made_at.is_(None),
    registrations.c.overdue_at.is_(None),
    registrations.c.closed_at.is_(None),
)
REGISTRATION_HOLDS_PERSONAL_DATA = registrations.c.patient_bsn.is_not(None)
_partial_index("ix_registrations_contact_open", registrations.c.contact_due_at, REGISTRATION_OPEN)
_partial_index(
    "ix_registrations_retention", registrations.c.retain_until, REGISTRATION_HOLDS_PERSONAL_DATA
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False),
    Column("referral_id", String(64), nullable=False, index=True),
    Column("registration_id", String(36), nullable=False),
    Column("organisation", String(40), nullable=False),
    Column("status", String(32), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("summary", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("message_id", name="uq_feedback_message_id"),
)

registration_events = Table(
    "registration_events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("registration_id", String(36), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("by", String(64), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=True),
    Column("headers", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    Column("sent_partition", Integer, nullable=True),
    Column("sent_offset", BigInteger, nullable=True),
    Column("check_first", Boolean, nullable=False, server_default=false()),
    # set (with published_at) when the broker refused the message as too large: not sent
    Column("refused_at", UtcDateTime, nullable=True),
    UniqueConstraint("message_id", name="uq_outbox_message_id"),
    Index("ix_outbox_unpublished", "published_at", "id"),
)
OUTBOX_REFUSED = outbox.c.refused_at.is_not(None)
_partial_index("ix_outbox_refused", outbox.c.id, OUTBOX_REFUSED)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(40), nullable=False),
    Column("recipient", String(40), nullable=True),
    Column("referral_id", String(64), nullable=True, index=True),
    Column("registration_id", String(36), nullable=True),
    Column("patient", String(64), nullable=True, index=True),
    Column("consent_id", String(64), nullable=True),
    Column("canonical", Text, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
)

hub_secrets = Table(
    "hub_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)

reprocessed = Table(
    "reprocessed",
    metadata,
    Column("dead_letter_id", String(36), primary_key=True),
    Column("reprocess_id", String(36), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("by", String(40), nullable=False),
    Column("consumed_at", UtcDateTime, nullable=True),
)

processing_log = Table(
    "processing_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("timestamp_ms", BigInteger, nullable=True),
    Index("ix_processing_log_position", "topic", "partition", "offset"),
)

ended_sessions = Table(
    "ended_sessions",
    metadata,
    Column("session_id", String(32), primary_key=True),
    Column("ends_at", UtcDateTime, nullable=False, index=True),
)
