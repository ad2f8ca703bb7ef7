"""The hub's store: consent-gate state, registrations and the transactional outbox.

Every batch of inbound records is applied in one transaction (`Store.run`), and the
messages it causes are written to `outbox` in that same transaction; the relay publishes
them afterwards. Concurrency: PostgreSQL runs SERIALIZABLE, SQLite takes its write lock at
BEGIN (BEGIN IMMEDIATE); a referral and its consent handled at the same moment by two
consumers therefore cannot both miss each other. Serialization failures are retried.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from adapters.logging import get_logger
from adapters.storage import tables as t
from adapters.storage.direct import Direct, answers_now, pipelined
from schemas.audit import AuditEntry
from schemas.consent import Consent
from schemas.feedback import WelfareFeedback
from schemas.messages import OutboundMessage
from schemas.registration import RegistrationState, ReleaseState, StoredReferral
from schemas.topics import CE_REFERRAL_RELEASED, CE_REFERRAL_UPDATED

log = get_logger("schakel.store")
T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)

_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock
_DISCLOSURES = frozenset({CE_REFERRAL_RELEASED.encode(), CE_REFERRAL_UPDATED.encode()})
"""The ce_types of outbox rows that carry personal data to a welfare organisation or a
municipality."""
MAX_ATTEMPTS = 8
SQLITE_LOCK_WAIT_MS = 30_000
QUICK_LOCK_WAIT_MS = 200


AUDIT_ROW = (
    "seq",
    "prev_hash",
    "hash",
    "canonical",
    "recorded_at",
    "action",
    "actor",
    "recipient",
    "referral_id",
    "registration_id",
    "patient",
    "consent_id",
)
"""The columns of `Store.audit_rows`, in order."""


def normalise_url(url: str) -> str:
    """`postgresql://` uses psycopg 3 (the driver we ship); everything else as given."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def same_store(a: str, b: str) -> bool:
    """Do two store URLs name the same database, however spelled? SQLite: the same file
    (relative paths resolved from here, links followed); PostgreSQL: the same host, port
    and database; anything else: the same normalised URL."""
    first, second = make_url(normalise_url(a)), make_url(normalise_url(b))
    if first.get_backend_name() != second.get_backend_name():
        return False
    if first.get_backend_name() == "sqlite":
        paths = [u.database or ":memory:" for u in (first, second)]
        if ":memory:" in paths:
            return False  # each connection its own database
        return os.path.realpath(paths[0]) == os.path.realpath(paths[1])
    if first.get_backend_name() == "postgresql":
        return all(
            (getattr(first, part) or default) == (getattr(second, part) or default)
            for part, default in (("host", "localhost"), ("port", 5432), ("database", ""))
        )
    return first == second


def shown_url(url: str) -> str:
    """The URL for messages: its password hidden (as given when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password to hide
        return url


def _retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _RETRY_SQLSTATES:
        return True
    if type(orig).__name__ == "PipelineAborted":
        # psycopg's pipeline after a failed statement, without its SQLSTATE: inside a
        # savepoint a serialization failure surfaces so. The transaction is run again
        # from the start; an error that is no conflict fails again, MAX_ATTEMPTS times.
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(orig)


def _headers_json(headers: tuple[tuple[str, bytes | None], ...]) -> str:
    return orjson.dumps(
        [[k, None if v is None else base64.b64encode(v).decode()] for k, v in headers]
    ).decode()


def _headers_from_json(raw: str) -> tuple[tuple[str, bytes | None], ...]:
    return tuple((k, None if v is None else base64.b64decode(v)) for k, v in orjson.loads(raw))


def timeline_rows(conn: Connection, registration_id: str) -> list[Any]:
    """A registration's status changes, oldest first (shared by the store and its views)."""
    return conn.execute(
        select(t.registration_events)
        .where(t.registration_events.c.registration_id == registration_id)
        .order_by(t.registration_events.c.id)
    ).all()


def _outbox_row(
    row_id: int,
    message_id: str,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: str,
    created_at: datetime,
    check_first: bool,
) -> OutboxRow:
    """From the columns of `_S.pending_outbox`, in that order."""
    return OutboxRow(
        id=row_id,
        created_at=created_at,
        check_first=bool(check_first),
        message=OutboundMessage(
            message_id=message_id,
            topic=topic,
            key=key,
            value=value,
            headers=_headers_from_json(headers),
        ),
    )


def _registration_state(row: Any) -> RegistrationState:
    return RegistrationState(
        registration_id=row.registration_id,
        referral_id=row.referral_id,
        recipient_id=row.recipient_id,
        status=row.status,
        practice_id=row.practice_id,
        contact_due_at=row.contact_due_at,
        contact_made_at=row.contact_made_at,
        overdue_at=row.overdue_at,
        closed_at=row.closed_at,
    )


def _release_state(r: Any) -> ReleaseState:
    return ReleaseState(**r._mapping)  # the columns are the fields (see `record_release`)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    message: OutboundMessage
    created_at: datetime = datetime.min.replace(tzinfo=UTC)
    check_first: bool = False
    """Handed back after the broker lost its state (`Store.broker_lost`): it may be on the
    new broker already, so the relay looks for it on its topic before sending it."""


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    status: str
    at: datetime
    by: str


@dataclass(frozen=True, slots=True)
class RegistrationView:
    registration_id: str
    referral_id: str
    recipient_id: str
    status: str
    timeline: tuple[TimelineEntry, ...]


class _S:
    """Statements built once: building a SQLAlchemy statement costs about three times as
    much as executing a built one with bound parameters (bench: hub CPU per referral)."""

    referral_body = select(t.referrals.c.body).where(t.referrals.c.referral_id == bindparam("b_id"))
    referral_bodies = select(t.referrals.c.referral_id, t.referrals.c.body).where(
        t.referrals.c.referral_id.in_(bindparam("b_ids", expanding=True))
    )
    update_referral = (
        update(t.referrals)
        .where(t.referrals.c.referral_id == bindparam("b_id"))
        .values(
            {
                c: bindparam(c)
                for c in (
                    "registration_id",
                    "recipient_id",
                    "patient_bsn",
                    "practice_id",
                    "body",
                    "updated_at",
                )
            }
        )
    )
    insert_referral = insert(t.referrals)
    insert_registration = insert(t.registrations)
    update_consent = (
        update(t.consents)
        .where(t.consents.c.consent_id == bindparam("b_id"))
        .values(
            {
                c: bindparam(c)
                for c in (
                    "status",
                    "kind",
                    "patient_bsn",
                    "names_referrals",
                    "period_start",
                    "started",
                    "expires_at",
                    "body",
                    "updated_at",
                )
            }
        )
    )
    insert_consent = insert(t.consents)
    delete_consent_referrals = delete(t.consent_referrals).where(
        t.consent_referrals.c.consent_id == bindparam("b_id")
    )
    insert_consent_referral = insert(t.consent_referrals)
    consent_body = select(t.consents.c.body).where(t.consents.c.consent_id == bindparam("b_id"))
    consent_bodies = select(t.consents.c.consent_id, t.consents.c.body).where(
        t.consents.c.consent_id.in_(bindparam("b_ids", expanding=True))
    )
    consents_for = (
        select(t.consents.c.consent_id, t.consents.c.body)
        .where(
            t.consents.c.consent_id.in_(
                select(t.consent_referrals.c.consent_id).where(
                    t.consent_referrals.c.referral_id == bindparam("b_id")
                )
            )
            | (
                (t.consents.c.patient_bsn == bindparam("b_bsn"))
                & (t.consents.c.names_referrals.is_(False))
            )
        )
        .order_by(t.consents.c.consent_id)
    )
    consent_links_in = select(
        t.consent_referrals.c.referral_id, t.consent_referrals.c.consent_id
    ).where(t.consent_referrals.c.referral_id.in_(bindparam("b_ids", expanding=True)))
    patient_consents_in = select(t.consents.c.patient_bsn, t.consents.c.consent_id).where(
        t.consents.c.patient_bsn.in_(bindparam("b_ids", expanding=True)),
        t.consents.c.names_referrals.is_(False),
    )
    releases_of = select(t.releases).where(t.releases.c.referral_id == bindparam("b_id"))
    releases_in = select(t.releases).where(
        t.releases.c.referral_id.in_(bindparam("b_ids", expanding=True))
    )
    insert_release = insert(t.releases)
    releases_of_registrations = select(
        t.releases.c.registration_id, t.releases.c.referral_id, t.releases.c.recipient_id
    ).where(t.releases.c.registration_id.in_(bindparam("b_ids", expanding=True)))
    released_before = select(t.releases.c.referral_id).where(
        t.releases.c.registration_id == bindparam("b_reg"),
        t.releases.c.recipient_id == bindparam("b_rcp"),
        t.releases.c.referral_id != bindparam("b_id"),
    )
    open_registration = (
        select(t.registrations.c.registration_id)
        .where(
            t.registrations.c.patient_bsn == bindparam("b_bsn"),
            t.registrations.c.recipient_id == bindparam("b_rcp"),
            t.registrations.c.closed_at.is_(None),
        )
        .order_by(t.registrations.c.created_at, t.registrations.c.registration_id)
    )
    open_registrations_of = select(
        t.registrations.c.patient_bsn,
        t.registrations.c.registration_id,
        t.registrations.c.recipient_id,
        t.registrations.c.created_at,
    ).where(
        t.registrations.c.patient_bsn.in_(bindparam("b_ids", expanding=True)),
        t.registrations.c.closed_at.is_(None),
    )
    registration = select(t.registrations).where(
        t.registrations.c.registration_id == bindparam("b_id")
    )
    registrations_in = select(t.registrations).where(
        t.registrations.c.registration_id.in_(bindparam("b_ids", expanding=True))
    )
    set_status = (
        update(t.registrations)
        .where(t.registrations.c.registration_id == bindparam("b_id"))
        .values(status=bindparam("status"), updated_at=bindparam("updated_at"))
    )
    insert_registration_event = insert(t.registration_events)
    last_audit = (
        select(t.audit_log.c.seq, t.audit_log.c.hash).order_by(t.audit_log.c.seq.desc()).limit(1)
    )
    insert_audit = insert(t.audit_log)
    insert_processing_log = insert(t.processing_log)
    processing_span = select(
        t.processing_log.c.topic,
        t.processing_log.c.partition,
        t.processing_log.c.offset,
        t.processing_log.c.timestamp_ms,
    ).where(
        t.processing_log.c.topic == bindparam("b_topic"),
        t.processing_log.c.partition == bindparam("b_partition"),
        t.processing_log.c.offset.between(bindparam("b_lo"), bindparam("b_hi")),
    )
    counter = select(t.counters.c.value).where(t.counters.c.name == bindparam("b_id"))
    set_counter = (
        update(t.counters)
        .where(t.counters.c.name == bindparam("b_id"))
        .values(value=bindparam("value"))
    )
    insert_counter = insert(t.counters)
    secret = select(t.hub_secrets.c.value).where(t.hub_secrets.c.name == bindparam("b_id"))
    # not a look-up and an insert: the unique message id decides
    insert_outbox_sqlite = sqlite_insert(t.outbox).on_conflict_do_nothing(
        index_elements=["message_id"]
    )
    insert_outbox_pg = pg_insert(t.outbox).on_conflict_do_nothing(index_elements=["message_id"])
    pending_outbox = (
        select(
            t.outbox.c.id,
            t.outbox.c.message_id,
            t.outbox.c.topic,
            t.outbox.c.key,
            t.outbox.c.value,
            t.outbox.c.headers,
            t.outbox.c.created_at,
            t.outbox.c.check_first,
        )
        .where(t.outbox.c.published_at.is_(None))
        .order_by(t.outbox.c.id)
        .limit(bindparam("b_limit"))
    )
    pending_outbox_after = pending_outbox.where(t.outbox.c.id > bindparam("b_after"))
    mark_published = (
        update(t.outbox)
        .where(t.outbox.c.id == bindparam("row_id"))
        .values(
            published_at=bindparam("published_at"),
            sent_partition=bindparam("p"),
            sent_offset=bindparam("o"),
            check_first=False,
            refused_at=bindparam("refused_at"),
        )
    )


_RELEASE_COLUMNS = tuple(c.key for c in _S.releases_in.selected_columns)
_REGISTRATION_COLUMNS = tuple(c.key for c in _S.registrations_in.selected_columns)


class _Row(dict[str, Any]):
    """A row read by `Direct` (a tuple) with a row's attribute access, for the readers
    written for SQLAlchemy's rows."""

    __getattr__ = dict.__getitem__


_SET_ONCE: dict[tuple[str, ...], Any] = {}
_STATE_FIELDS = frozenset(RegistrationState.model_fields)


_UNREAD: Any = object()
PREFETCH_CHUNK = 500


class Tx:
    """One transaction. Implements the domain's `GateStore` port (structurally).

    Fewer statements per record (bench: hub CPU per referral): rows are read once per
    transaction (or prefetched for a whole batch) and kept current by what this
    transaction writes; rows nothing in the transaction reads back (outbox, audit trail,
    status history, the registrations' current status) are written together, one
    `executemany` per table, at the end of the transaction or of a savepoint (`flush`).
    A savepoint rolled back forgets both (see `savepoint`)."""

    def __init__(self, conn: Connection, now: Callable[[], datetime]) -> None:
        self.conn = conn
        self._db = Direct(conn)  # the hot statements, on the DBAPI cursor
        self._now = now
        self._referrals: dict[str, StoredReferral | None] = {}
        self._consents: dict[str, Consent | None] = {}
        # Which consents `consents_for` returns, by its two halves, once read (complete for
        # each key present, kept current by `put_consent`; every id's body is in _consents):
        self._consents_naming: dict[str, set[str]] = {}  # referral id -> consent ids
        self._patient_consents: dict[str, set[str]] = {}  # BSN -> ids naming no referral
        self._registrations: dict[str, RegistrationState | None] = {}
        self._releases: dict[str, dict[str, ReleaseState]] = {}
        # (referral, recipient) of every release of a registration, once read (complete for
        # each key present, kept current by `record_release`; releases are never deleted):
        self._registration_releases: dict[str, set[tuple[str, str]]] = {}
        # BSN -> {registration id: (created at, recipient)} of its registrations not closed,
        # once read (complete for each BSN present, kept current by the transaction's new
        # and closed registrations; nothing else opens or closes one, or moves its BSN):
        self._open_registrations: dict[str, dict[str, tuple[datetime, str]]] = {}
        self._audit_head: tuple[int, str | None] | None = None
        self._secrets: dict[str, str] = {}
        self._later: dict[Any, list[dict[str, Any]]] = {}
        self._statuses: dict[str, dict[str, Any]] = {}
        # The timers' next moment (`next_due`): read once, then kept current by the due
        # moments this transaction writes.
        self._due: Any = _UNREAD
        self._due_written: datetime | None = None

    def _write_later(self, statement: Any, row: dict[str, Any]) -> None:
        self._later.setdefault(statement, []).append(row)

    def flush(self) -> None:
        """Write what was kept for later (called before commit, and by `savepoint`)."""
        later, self._later = self._later, {}
        for statement, rows in later.items():
            self._db.execute_many(statement, rows)
        if self._statuses:
            statuses, self._statuses = self._statuses, {}
            self._db.execute_many(_S.set_status, list(statuses.values()))

    def _forget(self) -> None:
        self._referrals.clear()
        self._consents.clear()
        self._consents_naming.clear()
        self._patient_consents.clear()
        self._registrations.clear()
        self._releases.clear()
        self._registration_releases.clear()
        self._open_registrations.clear()
        self._audit_head = None
        self._secrets.clear()
        self._later = {}
        self._statuses = {}
        self.forget_due()

    def _unread_chunks(self, ids: Iterable[str], known: dict[str, Any]) -> Iterator[list[str]]:
        wanted = sorted({i for i in ids if i not in known})
        for start in range(0, len(wanted), PREFETCH_CHUNK):
            yield wanted[start : start + PREFETCH_CHUNK]

    def prefetch(
        self,
        *,
        referrals: Iterable[str] = (),
        consents: Iterable[str] = (),
        registrations: Iterable[str] = (),
        consents_for: Iterable[tuple[str, str]] = (),
        patients: Iterable[str] = (),
    ) -> None:
        """Read what a batch will look up (found or not) in one statement per table and
        chunk: these referrals and their releases, consents, registrations (and those of
        the referrals found) with their releases, `consents_for` these (referral id, BSN)
        pairs, and the open registrations of these patients (BSNs)."""
        referrals = list(referrals)
        for chunk in self._unread_chunks(referrals, self._referrals):
            self._referrals.update(self._bodies(_S.referral_bodies, chunk, StoredReferral))
        for chunk in self._unread_chunks(referrals, self._releases):
            releases: dict[str, dict[str, ReleaseState]] = {r: {} for r in chunk}
            for row in self._db.rows(_S.releases_in, {"b_ids": chunk}):
                release = ReleaseState(**dict(zip(_RELEASE_COLUMNS, row, strict=True)))
                releases[release.referral_id][release.recipient_id] = release
            self._releases.update(releases)
        for chunk in self._unread_chunks(consents, self._consents):
            self._consents.update(self._bodies(_S.consent_bodies, chunk, Consent))
        of_referrals = [s.registration_id for r in referrals if (s := self._referrals.get(r))]
        registration_ids = [*registrations, *of_referrals]
        for chunk in self._unread_chunks(registration_ids, self._registrations):
            states: dict[str, RegistrationState | None] = dict.fromkeys(chunk)
            for row in self._db.rows(_S.registrations_in, {"b_ids": chunk}):
                state = _registration_state(_Row(zip(_REGISTRATION_COLUMNS, row, strict=True)))
                states[state.registration_id] = self._with_pending_status(state)
            self._registrations.update(states)
        for chunk in self._unread_chunks(registration_ids, self._registration_releases):
            released: dict[str, set[tuple[str, str]]] = {r: set() for r in chunk}
            for registration_id, referral_id, recipient_id in self._db.rows(
                _S.releases_of_registrations, {"b_ids": chunk}
            ):
                released[registration_id].add((referral_id, recipient_id))
            self._registration_releases.update(released)
        for chunk in self._unread_chunks((str(b) for b in patients), self._open_registrations):
            found: dict[str, dict[str, tuple[datetime, str]]] = {b: {} for b in chunk}
            for bsn, registration_id, recipient_id, created_at in self._db.rows(
                _S.open_registrations_of, {"b_ids": chunk}
            ):
                found[bsn][registration_id] = (created_at, recipient_id)
            self._open_registrations.update(found)
        self._prefetch_consents_for(consents_for)

    def _prefetch_consents_for(self, pairs: Iterable[tuple[str, str]]) -> None:
        pairs = list(pairs)
        naming: dict[str, set[str]] = {}
        for chunk in self._unread_chunks((r for r, _ in pairs), self._consents_naming):
            naming.update((r, set()) for r in chunk)
            for referral_id, consent_id in self._db.rows(_S.consent_links_in, {"b_ids": chunk}):
                naming[referral_id].add(consent_id)
        patients: dict[str, set[str]] = {}
        for chunk in self._unread_chunks((str(b) for _, b in pairs), self._patient_consents):
            patients.update((b, set()) for b in chunk)
            for bsn, consent_id in self._db.rows(_S.patient_consents_in, {"b_ids": chunk}):
                patients[bsn].add(consent_id)
        ids = {i for group in (naming, patients) for ids in group.values() for i in ids}
        for chunk in self._unread_chunks(ids, self._consents):
            self._consents.update(self._bodies(_S.consent_bodies, chunk, Consent))
        self._consents_naming.update(naming)
        self._patient_consents.update(patients)

    def _bodies(self, statement: Any, ids: list[str], model: type[B]) -> dict[str, B | None]:
        """(id, body) rows of `statement` for `ids`, parsed; None for an id not found."""
        found = dict(self._db.rows(statement, {"b_ids": ids}))
        return {i: model.model_validate_json(found[i]) if i in found else None for i in ids}

    # --- referrals -----------------------------------------------------------------
    def referral(self, referral_id: str) -> StoredReferral | None:
        if referral_id in self._referrals:
            return self._referrals[referral_id]
        rows = self._db.rows(_S.referral_body, {"b_id": referral_id})
        stored = StoredReferral.model_validate_json(rows[0][0]) if rows else None
        self._referrals[referral_id] = stored
        return stored

    def put_referral(self, stored: StoredReferral) -> None:
        known = self._referrals.get(stored.referral.referral_id, _UNREAD)
        self._referrals[stored.referral.referral_id] = stored
        now = self._now()
        values = {
            "registration_id": stored.registration_id,
            "recipient_id": stored.recipient_id,
            "patient_bsn": str(stored.referral.client.bsn),
            "practice_id": stored.referral.referrer.practice_id,
            "body": stored.model_dump_json(),
            "updated_at": now,
        }
        updated = known is not None and self._db.execute(
            _S.update_referral, {"b_id": stored.referral.referral_id, **values}
        )
        if not updated:
            self._db.write(
                _S.insert_referral,
                {
                    "referral_id": stored.referral.referral_id,
                    "received_at": stored.received_at,
                    **values,
                },
            )
        if self.registration(stored.registration_id) is None:
            open_ones = self._open_registrations.get(str(stored.referral.client.bsn))
            if open_ones is not None:
                open_ones[stored.registration_id] = (stored.received_at, stored.recipient_id)
            self._db.write(
                _S.insert_registration,
                {
                    "registration_id": stored.registration_id,
                    "referral_id": stored.referral.referral_id,
                    "recipient_id": stored.recipient_id,
                    "status": "received",
                    "created_at": stored.received_at,
                    "updated_at": now,
                    "patient_bsn": str(stored.referral.client.bsn),
                    "practice_id": stored.referral.referrer.practice_id,
                },
            )
            self._registrations[stored.registration_id] = RegistrationState(
                registration_id=stored.registration_id,
                referral_id=stored.referral.referral_id,
                recipient_id=stored.recipient_id,
                status="received",
                practice_id=stored.referral.referrer.practice_id,
            )

    def referrals_of_patient(self, bsn: str) -> list[StoredReferral]:
        rows = self.conn.execute(
            select(t.referrals.c.body)
            .where(t.referrals.c.patient_bsn == str(bsn))
            .order_by(t.referrals.c.referral_id)
        )
        return [StoredReferral.model_validate_json(r.body) for r in rows]

    # --- consents ------------------------------------------------------------------
    def consent(self, consent_id: str) -> Consent | None:
        if consent_id in self._consents:
            return self._consents[consent_id]
        rows = self._db.rows(_S.consent_body, {"b_id": consent_id})
        found = Consent.model_validate_json(rows[0][0]) if rows else None
        self._consents[consent_id] = found
        return found

    def put_consent(self, consent: Consent, received_at: datetime) -> None:
        known = self._consents.get(consent.consent_id, _UNREAD)
        self._consents[consent.consent_id] = consent
        self._index_consent(known, consent)
        starts_later = consent.period_start is not None and consent.period_start > received_at
        if starts_later and consent.status == "active":
            self._wrote_due(consent.period_start)  # type: ignore[arg-type]
        expires_at = t.consent_expires_at(consent.status, consent.period_end)
        if expires_at is not None:
            self._wrote_due(expires_at)
        values = {
            "status": consent.status,
            "kind": consent.kind,
            "patient_bsn": str(consent.patient_bsn) if consent.patient_bsn else None,
            "names_referrals": bool(consent.referrals),
            "period_start": consent.period_start,
            "started": not starts_later,
            "expires_at": expires_at,
            "body": consent.model_dump_json(),
            "updated_at": received_at,
        }
        updated = known is not None and self._db.execute(
            _S.update_consent, {"b_id": consent.consent_id, **values}
        )
        if not updated:
            self._db.write(
                _S.insert_consent,
                {"consent_id": consent.consent_id, "received_at": received_at, **values},
            )
        if known is not None:  # a consent not in the store has no referrals there either
            self._db.write(_S.delete_consent_referrals, {"b_id": consent.consent_id})
        refs = sorted({ref.value for ref in consent.referrals})
        if refs:
            self._db.execute_many(
                _S.insert_consent_referral,
                [{"consent_id": consent.consent_id, "referral_id": r} for r in refs],
            )

    def _index_consent(self, before: Consent | None | Any, after: Consent) -> None:
        """Keep `consents_for`'s halves current when a consent is written. (A consent
        whose body this transaction has not read is in neither: only read ones are.)"""
        if isinstance(before, Consent):
            for ref in before.referrals:
                self._consents_naming.get(ref.value, set()).discard(before.consent_id)
            if not before.referrals and before.patient_bsn:
                self._patient_consents.get(str(before.patient_bsn), set()).discard(
                    before.consent_id
                )
        for ref in after.referrals:
            naming = self._consents_naming.get(ref.value)
            if naming is not None:
                naming.add(after.consent_id)
        if not after.referrals and after.patient_bsn:
            patient = self._patient_consents.get(str(after.patient_bsn))
            if patient is not None:
                patient.add(after.consent_id)

    def consents_for(self, referral_id: str, bsn: str) -> list[Consent]:
        naming = self._consents_naming.get(referral_id)
        patient = self._patient_consents.get(str(bsn))
        if naming is not None and patient is not None:
            return [self._consents[i] for i in sorted(naming | patient)]  # type: ignore[misc]
        rows = self._db.rows(_S.consents_for, {"b_id": referral_id, "b_bsn": str(bsn)})
        found: list[Consent] = []
        naming, patient = set(), set()
        for consent_id, body in rows:
            consent = self._consents.get(consent_id)  # read before: the same row
            if consent is None:
                consent = self._consents[consent_id] = Consent.model_validate_json(body)
            found.append(consent)
            (naming if consent.referrals else patient).add(consent_id)
        self._consents_naming[referral_id] = naming
        self._patient_consents[str(bsn)] = patient
        return found

    def consents_starting(self, until: datetime) -> list[Consent]:
        rows = self.conn.execute(
            select(t.consents.c.body)
            .where(
                t.CONSENT_NOT_STARTED,
                t.consents.c.status == "active",
                t.consents.c.period_start <= until,
            )
            .order_by(t.consents.c.period_start, t.consents.c.consent_id)
        )
        return [Consent.model_validate_json(r.body) for r in rows]

    def mark_started(self, consent_id: str) -> None:
        self.conn.execute(
            update(t.consents).where(t.consents.c.consent_id == consent_id).values(started=True)
        )

    def consents_ending(self, until: datetime) -> list[Consent]:
        rows = self.conn.execute(
            select(t.consents.c.body)
            .where(t.CONSENT_EXPIRING, t.consents.c.expires_at <= until)
            .order_by(t.consents.c.expires_at, t.consents.c.consent_id)
        )
        return [Consent.model_validate_json(r.body) for r in rows]

    def mark_ended(self, consent_id: str) -> None:
        self.conn.execute(
            update(t.consents).where(t.consents.c.consent_id == consent_id).values(expires_at=None)
        )

    # --- releases and registrations -------------------------------------------------
    def releases_of(self, referral_id: str) -> dict[str, ReleaseState]:
        known = self._releases.get(referral_id)
        if known is None:
            known = self._releases[referral_id] = self._read_releases(referral_id)
        return dict(known)

    def _read_releases(self, referral_id: str) -> dict[str, ReleaseState]:
        rows = self.conn.execute(_S.releases_of, {"b_id": referral_id})
        return {r.recipient_id: _release_state(r) for r in rows}

    def record_release(self, release: ReleaseState) -> None:
        self._db.write(_S.insert_release, release.model_dump())
        released = self._registration_releases.get(release.registration_id)
        if released is not None:
            released.add((release.referral_id, release.recipient_id))
        if release.referral_id in self._releases:
            self._releases[release.referral_id][release.recipient_id] = release

    def _update_release(self, referral_id: str, recipient_id: str, **changes: Any) -> None:
        known = self._releases.get(referral_id, {})
        if recipient_id in known:
            known[recipient_id] = known[recipient_id].model_copy(update=changes)

    def set_fingerprint(self, referral_id: str, recipient_id: str, fingerprint: str) -> None:
        self._update_release(referral_id, recipient_id, fingerprint=fingerprint)
        self.conn.execute(
            update(t.releases)
            .where(
                t.releases.c.referral_id == referral_id, t.releases.c.recipient_id == recipient_id
            )
            .values(fingerprint=fingerprint)
        )

    def mark_revoked(self, referral_id: str, recipient_id: str, at: datetime) -> None:
        self._update_release(referral_id, recipient_id, revoked_at=at)
        self.conn.execute(
            update(t.releases)
            .where(
                t.releases.c.referral_id == referral_id, t.releases.c.recipient_id == recipient_id
            )
            .values(revoked_at=at)
        )

    def registration_released_before(
        self, registration_id: str, recipient_id: str, referral_id: str
    ) -> bool:
        """Did another referral of this registration already reach this recipient?"""
        released = self._registration_releases.get(registration_id)
        if released is not None:
            return any(r == recipient_id and ref != referral_id for ref, r in released)
        rows = self._db.rows(
            _S.released_before,
            {"b_reg": registration_id, "b_rcp": recipient_id, "b_id": referral_id},
        )
        return bool(rows)

    def live_releases(self, registration_id: str, recipient_id: str) -> int:
        return int(
            self.conn.execute(
                select(func.count()).where(
                    t.releases.c.registration_id == registration_id,
                    t.releases.c.recipient_id == recipient_id,
                    t.releases.c.revoked_at.is_(None),
                )
            ).scalar_one()
        )

    def first_live_release(self, registration_id: str, recipient_id: str) -> ReleaseState | None:
        r = t.releases.c
        row = self.conn.execute(
            select(t.releases)
            .where(
                r.registration_id == registration_id,
                r.recipient_id == recipient_id,
                r.revoked_at.is_(None),
            )
            .order_by(r.released_at, r.referral_id)
            .limit(1)
        ).first()
        return _release_state(row) if row is not None else None

    # --- registrations -------------------------------------------------------------
    def open_registration(self, bsn: str, recipient_id: str) -> str | None:
        known = self._open_registrations.get(str(bsn))
        if known is not None:  # the first by (created_at, registration_id), as the query
            open_there = [(c, i) for i, (c, r) in known.items() if r == recipient_id]
            return min(open_there)[1] if open_there else None
        rows = self._db.rows(_S.open_registration, {"b_bsn": str(bsn), "b_rcp": recipient_id})
        return str(rows[0][0]) if rows else None

    def registration(self, registration_id: str) -> RegistrationState | None:
        known = self._registrations.get(registration_id, _UNREAD)
        if known is not _UNREAD:
            return known
        row = self.conn.execute(_S.registration, {"b_id": registration_id}).first()
        state = self._with_pending_status(_registration_state(row)) if row else None
        self._registrations[registration_id] = state
        return state

    def _with_pending_status(self, state: RegistrationState) -> RegistrationState:
        pending = self._statuses.get(state.registration_id)
        if pending is None:
            return state
        return state.model_copy(update={"status": pending["status"]})

    def _update_registration(self, registration_id: str, **changes: Any) -> None:
        known = self._registrations.get(registration_id)
        if known is not None:
            self._registrations[registration_id] = known.model_copy(update=changes)

    def _set_once(self, registration_id: str, column: str, **values: datetime) -> None:
        """Set `values` on a registration unless `column` is already set (first one wins)."""
        key = (column, *sorted(values))
        statement = _SET_ONCE.get(key)
        if statement is None:
            statement = _SET_ONCE[key] = (
                update(t.registrations)
                .where(
                    t.registrations.c.registration_id == bindparam("b_id"),
                    t.registrations.c[column].is_(None),
                )
                .values({name: bindparam(name) for name in values})
            )
        self._db.write(statement, {"b_id": registration_id, **values})
        known = self._registrations.get(registration_id)
        if known is not None and getattr(known, column) is None:
            self._registrations[registration_id] = known.model_copy(
                update={k: v for k, v in values.items() if k in _STATE_FIELDS}
            )

    def set_contact_due(self, registration_id: str, due_at: datetime) -> None:
        self._set_once(registration_id, "contact_due_at", contact_due_at=due_at)
        self._wrote_due(due_at)

    def mark_contact_made(self, registration_id: str, at: datetime) -> None:
        self._set_once(registration_id, "contact_made_at", contact_made_at=at)

    def close_registration(
        self, registration_id: str, at: datetime, retain_until: datetime
    ) -> None:
        self._set_once(registration_id, "closed_at", closed_at=at, retain_until=retain_until)
        self._wrote_due(retain_until)
        for open_ones in self._open_registrations.values():
            open_ones.pop(registration_id, None)

    def next_due(self) -> datetime | None:
        """The earliest moment at which the timer has something to do (a consent's period
        begins or ends, a contact term passes, a retention ends), or None. For the replay, which
        ticks at those moments between the records around them, as the live timer did."""
        if self._due is _UNREAD:
            self.flush()
            c, r = t.consents.c, t.registrations.c
            found = [
                self.conn.execute(select(func.min(column)).where(*where)).scalar_one()
                for column, where in (
                    (c.period_start, (t.CONSENT_NOT_STARTED, c.status == "active")),
                    (c.expires_at, (t.CONSENT_EXPIRING,)),
                    (r.contact_due_at, (t.REGISTRATION_OPEN,)),
                    (r.retain_until, (t.REGISTRATION_HOLDS_PERSONAL_DATA,)),
                )
            ]
            self._due = min((d for d in found if d is not None), default=None)
            self._due_written = None  # flushed: it is in what was read
        if self._due_written is None or (self._due is not None and self._due <= self._due_written):
            return self._due  # type: ignore[no-any-return]
        return self._due_written

    def _wrote_due(self, moment: datetime) -> None:
        if self._due_written is None or moment < self._due_written:
            self._due_written = moment

    def forget_due(self) -> None:
        """After the timer acted: `next_due` reads the store again."""
        self._due = _UNREAD
        self._due_written = None

    def registrations_due(self, until: datetime) -> list[RegistrationState]:
        self.flush()
        rows = self.conn.execute(
            select(t.registrations)
            .where(
                t.registrations.c.contact_due_at <= until,
                t.REGISTRATION_OPEN,
            )
            .order_by(t.registrations.c.contact_due_at, t.registrations.c.registration_id)
        )
        return [_registration_state(r) for r in rows]

    def mark_overdue(self, registration_id: str, at: datetime) -> None:
        self._update_registration(registration_id, overdue_at=at)
        self.conn.execute(
            update(t.registrations)
            .where(t.registrations.c.registration_id == registration_id)
            .values(overdue_at=at)
        )

    def add_feedback(
        self, message_id: str, feedback: WelfareFeedback, registration_id: str, at: datetime
    ) -> bool:
        """Keep a feedback message; False when this very message was kept before."""
        exists = self.conn.execute(
            select(t.feedback.c.id).where(t.feedback.c.message_id == message_id)
        ).first()
        if exists:
            return False
        self.conn.execute(
            insert(t.feedback).values(
                message_id=message_id,
                referral_id=feedback.referral_id,
                registration_id=registration_id,
                organisation=feedback.organisation,
                status=str(feedback.status),
                occurred_at=feedback.occurred_at,
                summary=feedback.summary,
                received_at=at,
            )
        )
        return True

    def purge_expired(self, now: datetime) -> int:
        """Closed registrations past their retention keep their ids and timeline; the
        personal data held for them (referrals, feedback summaries, the BSN) is deleted."""
        rows = self.conn.execute(
            select(t.registrations.c.registration_id, t.registrations.c.patient_bsn).where(
                t.registrations.c.retain_until <= now,
                t.REGISTRATION_HOLDS_PERSONAL_DATA,
            )
        ).all()
        expired = [r.registration_id for r in rows]
        patients = {r.patient_bsn for r in rows}
        if not expired:
            return 0
        referrals = t.referrals.c
        purged = set(
            self.conn.execute(
                select(referrals.referral_id).where(referrals.registration_id.in_(expired))
            ).scalars()
        )
        self.conn.execute(delete(t.referrals).where(referrals.registration_id.in_(expired)))
        self._referrals.clear()
        self._registrations.clear()
        self.conn.execute(
            update(t.feedback).where(t.feedback.c.registration_id.in_(expired)).values(summary="")
        )
        self.conn.execute(
            update(t.registrations)
            .where(t.registrations.c.registration_id.in_(expired))
            .values(patient_bsn=None)
        )
        self._forget_patients_in_consents(purged, patients)
        return len(expired)

    def _holds_patient(self, bsn: str) -> bool:
        """Does the store still hold a referral or a registration of this patient?"""
        return any(
            self.conn.execute(query).first() is not None
            for query in (
                select(t.referrals.c.referral_id).where(t.referrals.c.patient_bsn == bsn).limit(1),
                select(t.registrations.c.registration_id)
                .where(t.registrations.c.patient_bsn == bsn)
                .limit(1),
            )
        )

    def _forget_patients_in_consents(self, purged: set[str], patients: set[str | None]) -> None:
        """The BSN of consents that no longer concern anything held: those naming only
        referrals now purged (or gone before), and a patient's consents for all their
        referrals once nothing of that patient is held. The rows stay, with their status:
        a withdrawn consent must not be revived by a late copy of its grant."""
        c, named = t.consents.c, t.consent_referrals.c
        candidates = set(
            self.conn.execute(
                select(named.consent_id).where(named.referral_id.in_(purged))
            ).scalars()
        )
        still_named = set(
            self.conn.execute(
                select(named.consent_id)
                .join(t.referrals, t.referrals.c.referral_id == named.referral_id)
                .where(named.consent_id.in_(candidates))
            ).scalars()
        )
        forget = candidates - still_named
        for bsn in patients - {None}:
            if not self._holds_patient(str(bsn)):
                forget |= set(
                    self.conn.execute(
                        select(c.consent_id).where(
                            c.patient_bsn == bsn, c.names_referrals.is_(False)
                        )
                    ).scalars()
                )
        for consent_id, body in self.conn.execute(
            select(c.consent_id, c.body).where(c.consent_id.in_(forget), c.patient_bsn.is_not(None))
        ).all():
            kept = Consent.model_validate_json(body).model_copy(update={"patient_bsn": None})
            self.conn.execute(
                update(t.consents)
                .where(c.consent_id == consent_id)
                .values(patient_bsn=None, body=kept.model_dump_json())
            )
        self._consents.clear()
        self._consents_naming.clear()
        self._patient_consents.clear()

    def prune_outbox(self, keep: timedelta, except_topic: str, limit: int = 10_000) -> int:
        """Delete (at most `limit`) outbox rows published more than `keep` ago, by the store's
        clock (the one `Store.mark_published` stamps with): the broker has those messages,
        and the store's copies hold the personal data they carry. Rows of `except_topic`
        (the dead letters, which `schakel dlq` reads) stay, and so do messages the broker
        refused as too large: never sent, they wait for `schakel outbox requeue --refused`
        (the metrics and the start-up warning keep counting them). What is gone can no
        longer be sent again by `schakel outbox requeue` or counted after a broker's loss."""
        oldest = (
            select(t.outbox.c.id)
            .where(
                t.outbox.c.published_at < self._now() - keep,
                t.outbox.c.topic != except_topic,
                t.outbox.c.refused_at.is_(None),
            )
            .order_by(t.outbox.c.published_at)
            .limit(limit)
        )
        deleted = self.conn.execute(delete(t.outbox).where(t.outbox.c.id.in_(oldest))).rowcount
        return int(deleted or 0)

    def registration_patient(
        self, registration_id: str
    ) -> tuple[str | None, str | None, str | None]:
        """(BSN, referral id, referral system) of a registration, for the audit trail."""
        row = self.conn.execute(
            select(t.registrations.c.patient_bsn, t.registrations.c.referral_id).where(
                t.registrations.c.registration_id == registration_id
            )
        ).first()
        if row is None:
            return None, None, None
        stored = self.referral(row.referral_id)
        return (
            row.patient_bsn,
            row.referral_id,
            stored.referral.identifier_system if stored else None,
        )

    def claim_reprocess(self, reprocess_id: str, at: datetime) -> bool:
        """True the first time a re-driven record is consumed, False after (or if the id is
        one `dlq reprocess` never issued and was seen before)."""
        row = self.conn.execute(
            select(t.reprocessed.c.consumed_at).where(t.reprocessed.c.reprocess_id == reprocess_id)
        ).first()
        if row is None:
            return True  # not issued here (another store, a replay): nothing to hold it to
        if row.consumed_at is not None:
            return False
        self.conn.execute(
            update(t.reprocessed)
            .where(t.reprocessed.c.reprocess_id == reprocess_id)
            .values(consumed_at=at)
        )
        return True

    def forget_reprocess(self, dead_letter_id: str, reprocess_id: str) -> None:
        """Undo `record_reprocess` after a send that failed."""
        self.conn.execute(
            delete(t.reprocessed).where(
                t.reprocessed.c.dead_letter_id == dead_letter_id,
                t.reprocessed.c.reprocess_id == reprocess_id,
            )
        )

    def record_reprocess(
        self, dead_letter_id: str, reprocess_id: str, at: datetime, by: str
    ) -> bool:
        """False when this dead letter was re-driven before (it is never sent twice)."""
        exists = self.conn.execute(
            select(t.reprocessed.c.dead_letter_id).where(
                t.reprocessed.c.dead_letter_id == dead_letter_id
            )
        ).first()
        if exists:
            return False
        self.conn.execute(
            insert(t.reprocessed).values(
                dead_letter_id=dead_letter_id, reprocess_id=reprocess_id, at=at, by=by
            )
        )
        return True

    def applied_already(
        self, records: list[tuple[str, int, int, int | None]]
    ) -> set[tuple[str, int, int, int | None]]:
        """Those of `records` (topic, partition, offset, timestamp) the processing log holds:
        applied already, by this instance or another that had their partition before a
        rebalance. The timestamp tells a record from another at the same position of a
        topic made again (a broker that lost its state restarts offsets at 0)."""
        if not records:
            return set()
        spans: dict[tuple[str, int], list[int]] = {}
        for topic, partition, offset, _ in records:
            spans.setdefault((topic, partition), []).append(offset)
        found: list[tuple[Any, ...]] = []
        for (topic, partition), offsets in spans.items():
            # One built statement a partition (a poll's batch mostly holds one): building a
            # statement per transaction cost more than reading with it.
            found += self._db.rows(
                _S.processing_span,
                {
                    "b_topic": topic,
                    "b_partition": partition,
                    "b_lo": min(offsets),
                    "b_hi": max(offsets),
                },
            )
        held = {(a, int(b), int(c), d) for a, b, c, d in found}
        return {r for r in records if r in held}

    def log_processing(self, records: list[tuple[str, int, int, int | None]]) -> None:
        """Record the order in which inbound records were applied. The counter row is
        updated in every batch transaction, so on PostgreSQL batches serialise on it and the
        sequence is the order in which their effects became visible."""
        if not records:
            return
        first = self._advance("processing-order", len(records))
        self._db.execute_many(
            _S.insert_processing_log,
            [
                {
                    "seq": first + i,
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "timestamp_ms": ts,
                }
                for i, (topic, partition, offset, ts) in enumerate(records)
            ],
        )

    # --- audit ------------------------------------------------------------------------
    def last_audit(self) -> tuple[int, str | None]:
        if self._audit_head is None:
            rows = self._db.rows(_S.last_audit, {})
            self._audit_head = (int(rows[0][0]), rows[0][1]) if rows else (0, None)
        return self._audit_head

    def insert_audit(self, entry: AuditEntry) -> None:
        self._write_later(
            _S.insert_audit,
            {
                "seq": entry.seq,
                "recorded_at": entry.recorded,
                "action": entry.action,
                "actor": entry.actor,
                "recipient": entry.recipient,
                "referral_id": entry.referral_id,
                "registration_id": entry.registration_id,
                "patient": entry.patient,
                "consent_id": entry.consent_id,
                "canonical": entry.canonical,
                "hash": entry.hash,
                "prev_hash": entry.prev_hash,
            },
        )
        self._audit_head = (entry.seq, entry.hash)

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """A value kept in the store, made once (e.g. the pseudonym key)."""
        if name in self._secrets:
            return self._secrets[name]
        rows = self._db.rows(_S.secret, {"b_id": name})
        if rows:
            value = str(rows[0][0])
        else:
            value = make()
            self.conn.execute(insert(t.hub_secrets).values(name=name, value=value))
        self._secrets[name] = value
        return value

    def next_number(self, name: str) -> int:
        """A counter that never repeats a value (part of this transaction)."""
        return self._advance(name, 1)

    def _advance(self, name: str, by: int) -> int:
        """Move counter `name` on by `by`; the first of the values taken."""
        rows = self._db.rows(_S.counter, {"b_id": name})
        first = (int(rows[0][0]) if rows else 0) + 1
        if rows:
            self._db.write(_S.set_counter, {"b_id": name, "value": first + by - 1})
        else:
            self._db.write(_S.insert_counter, {"name": name, "value": first + by - 1})
        return first

    def add_status(self, registration_id: str, status: str, at: datetime, by: str) -> None:
        """The registration's current status and its history (both written by `flush`)."""
        self._statuses[registration_id] = {
            "b_id": registration_id,
            "status": str(status),
            "updated_at": at,
        }
        self._update_registration(registration_id, status=str(status))
        self._write_later(
            _S.insert_registration_event,
            {"registration_id": registration_id, "status": str(status), "at": at, "by": by},
        )

    # --- outbox --------------------------------------------------------------------
    def mark_published(self, rows: list[dict[str, Any]]) -> None:
        """For `Store.mark_published`."""
        self._db.execute_many(_S.mark_published, rows)

    def add_outbox(self, message: OutboundMessage) -> None:
        """Insert (by `flush`) unless a message with this id exists."""
        statement = (
            _S.insert_outbox_pg
            if self.conn.dialect.name == "postgresql"
            else _S.insert_outbox_sqlite
        )
        self._write_later(
            statement,
            {
                "message_id": message.message_id,
                "topic": message.topic,
                "key": message.key,
                "value": message.value,
                "headers": _headers_json(message.headers),
                "created_at": self._now(),
            },
        )

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """What happens inside is written, or rolled back, on its own: what was kept for
        later is written before it starts and at its end, inside it, so a failing write
        belongs to the record that caused it."""
        self.flush()
        try:
            with self.conn.begin_nested():
                yield
                self.flush()
        except BaseException:
            self._forget()
            raise


@dataclass(frozen=True)
class LostOnTopic:
    topic: str
    messages: int
    first_published: datetime
    last_published: datetime


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """An outbox row the broker refused as too large: what an operator needs to find it
    (no content: it carries personal data)."""

    row_id: int
    message_id: str
    topic: str
    size: int
    refused_at: datetime


@dataclass(frozen=True)
class BrokerLoss:
    lost: tuple[LostOnTopic, ...]
    requeued: dict[str, int]
    withheld: int = 0
    """Releases and updates not handed back: their release was revoked since."""


class Store:
    def __init__(self, url: str, *, now: Callable[[], datetime] | None = None) -> None:
        self.url = normalise_url(url)
        self._now = now or (lambda: datetime.now(UTC))
        self.engine = _engine(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent; safe with several hubs)."""
        from adapters.storage.migrate import upgrade

        upgrade(self.engine)

    def run(self, work: Callable[[Tx], T], *, quick: bool = False) -> T:
        """Run `work` in one transaction; retried from scratch on serialization failures.
        `quick`: one attempt that waits at most `QUICK_LOCK_WAIT_MS` for a lock (for work
        on an event loop, which must not block; the caller retries elsewhere)."""
        if quick:
            return self._run_quick(work)
        delay = 0.01
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn, pipelined(conn):
                    tx = Tx(conn, self._now)
                    result = work(tx)
                    tx.flush()
                    return result
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or not _retryable(exc):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def _run_quick(self, work: Callable[[Tx], T]) -> T:
        with self._quick() as conn, conn.begin(), pipelined(conn):
            if conn.dialect.name != "sqlite":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {QUICK_LOCK_WAIT_MS}")
            tx = Tx(conn, self._now)
            result = work(tx)
            tx.flush()
            return result

    @contextlib.contextmanager
    def _quick(self) -> Iterator[Connection]:
        """A connection that waits at most `QUICK_LOCK_WAIT_MS` for SQLite's locks (taken
        at BEGIN IMMEDIATE); PostgreSQL's transactions set their own `lock_timeout`."""
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.connect() as conn:
            if sqlite:
                _busy_timeout(conn, QUICK_LOCK_WAIT_MS)
            try:
                yield conn
            finally:
                if sqlite and not conn.invalidated:
                    try:
                        _busy_timeout(conn, SQLITE_LOCK_WAIT_MS)
                    except DBAPIError:
                        conn.invalidate()  # never back to the pool with the short wait

    def outbox_rows(
        self, *, topic: str, message_id: str | None = None, limit: int = 1000
    ) -> list[OutboxRow]:
        query = (
            select(*_S.pending_outbox.selected_columns)
            .where(t.outbox.c.topic == topic)
            .order_by(t.outbox.c.id)
            .limit(limit)
        )
        if message_id is not None:
            query = query.where(t.outbox.c.message_id == message_id)
        with self.engine.connect() as conn:
            return [_outbox_row(*row) for row in conn.execute(query)]

    # --- outbox relay -------------------------------------------------------------
    def pending_outbox(
        self, limit: int = 500, *, after: int | None = None, quick: bool = False
    ) -> list[OutboxRow]:
        """The oldest unpublished rows (with an id above `after`, if given). `quick`: waits
        for no lock (see `run`)."""
        with self._quick() if quick else self.engine.connect() as conn:
            if after is None:
                rows = Direct(conn).rows(_S.pending_outbox, {"b_limit": limit})
            else:
                rows = Direct(conn).rows(
                    _S.pending_outbox_after, {"b_limit": limit, "b_after": after}
                )
        return [_outbox_row(*row) for row in rows]

    def mark_published(
        self,
        sent: list[tuple[int, int | None, int | None]],
        *,
        refused: Collection[int] = (),
        quick: bool = False,
    ) -> None:
        """(row id, partition, offset) of what the broker acknowledged; the ids in `refused`
        are rows the broker refused as too large (no partition, no offset), marked so that
        the relay leaves them and `refused_outbox` lists them. `quick`: one attempt that
        waits for no lock (see `run`)."""
        if not sent:
            return
        now = self._now()
        rows = [
            {
                "row_id": i,
                "p": p,
                "o": o,
                "published_at": now,
                "refused_at": now if i in refused else None,
            }
            for i, p, o in sent
        ]
        self.run(lambda tx: tx.mark_published(rows), quick=quick)

    def refused_count(self) -> int:
        """How many messages the broker refused as too large are still unsent."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(t.OUTBOX_REFUSED)).scalar_one())

    def refused_outbox(self, limit: int = 1000) -> list[RefusedMessage]:
        """The oldest `limit` messages the broker refused as too large and nobody has queued
        again since (`schakel outbox refused`)."""
        o = t.outbox.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(o.id, o.message_id, o.topic, func.length(o.value), o.refused_at)
                .where(t.OUTBOX_REFUSED)
                .order_by(o.id)
                .limit(limit)
            ).all()
        return [RefusedMessage(int(i), m, topic, int(n or 0), at) for i, m, topic, n, at in rows]

    def checked(self, row_ids: list[int]) -> None:
        """The relay looked for these `check_first` rows on their topics and did not find
        them: they are sent like any other pending row."""

        def work(tx: Tx) -> None:
            for start in range(0, len(row_ids), 500):
                tx.conn.execute(
                    update(t.outbox)
                    .where(
                        t.outbox.c.id.in_(row_ids[start : start + 500]),
                        t.outbox.c.published_at.is_(None),
                    )
                    .values(check_first=False)
                )

        self.run(work)

    def sent_positions(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """The highest offset known to hold a message of ours, per topic-partition."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.outbox.c.topic, t.outbox.c.sent_partition, func.max(t.outbox.c.sent_offset)
                )
                .where(t.outbox.c.topic.in_(topics), t.outbox.c.sent_offset.is_not(None))
                .group_by(t.outbox.c.topic, t.outbox.c.sent_partition)
            ).all()
        return {(topic, partition): int(offset) for topic, partition, offset in rows}

    def relay_lock(self) -> RelayLock:
        """The lock that lets exactly one of several hub instances on this store run the
        outbox relay (see `RelayLock`)."""
        return RelayLock(self)

    def _withheld(
        self,
        conn: Connection,
        chosen: ColumnElement[bool],
        recipients: Mapping[str, str] | None,
    ) -> set[int]:
        """Outbox rows of those `chosen` that carry personal data to a recipient whose
        release of that referral is revoked now (`recipients`: disclosure topic ->
        recipient id): never sent again, since a withdrawal stops all further flow."""
        if not recipients:
            return set()
        o = t.outbox.c
        rows = conn.execute(
            select(o.id, o.topic, o.key, o.headers).where(chosen, o.topic.in_(list(recipients)))
        ).all()
        candidates = []
        for row_id, topic, key, headers in rows:
            kind = dict(_headers_from_json(headers)).get("ce_type")
            if kind in _DISCLOSURES and key:
                candidates.append((row_id, key.decode("utf-8", "replace"), recipients[topic]))
        revoked: set[tuple[str, str]] = set()
        referral_ids = sorted({referral_id for _, referral_id, _ in candidates})
        r = t.releases.c
        for start in range(0, len(referral_ids), 500):
            revoked.update(
                (a, b)
                for a, b in conn.execute(
                    select(r.referral_id, r.recipient_id).where(
                        r.referral_id.in_(referral_ids[start : start + 500]),
                        r.revoked_at.is_not(None),
                    )
                )
            )
        return {row_id for row_id, ref, rec in candidates if (ref, rec) in revoked}

    def broker_lost(
        self, last_good: datetime, recipients: Mapping[str, str] | None = None
    ) -> BrokerLoss:
        """After the broker lost its state: rows published since `last_good` (the last moment
        it was known to hold its state) go back to pending, since their acknowledgements may
        have come from the new, empty broker for topics it no longer had; rows published
        before are reported as lost with the broker. Every stored partition and offset
        belongs to the old broker and is forgotten, so the relay's check reads the new topics
        by time.

        The rows handed back are marked `check_first`: the relay sends them only once it
        has looked for them on the new broker. Every instance on this store runs this when
        its own watch notices the loss, each with its own `last_good`, so one instance's
        call can hand back rows that the relaying instance has already sent to the new
        broker; those are found there and marked, not sent twice. Releases and updates
        whose release has been revoked since are not handed back (`_withheld`)."""
        summary = (
            select(
                t.outbox.c.topic,
                func.count(),
                func.min(t.outbox.c.published_at),
                func.max(t.outbox.c.published_at),
            )
            .where(t.outbox.c.published_at.is_not(None), t.outbox.c.refused_at.is_(None))
            .group_by(t.outbox.c.topic)
        )
        with self.engine.begin() as conn:
            # never on any broker: they stay refused (`requeue_published(refused=True)`)
            later = and_(t.outbox.c.published_at >= last_good, t.outbox.c.refused_at.is_(None))
            withheld = self._withheld(conn, later, recipients)
            lost = conn.execute(summary.where(t.outbox.c.published_at < last_good)).all()
            again = summary.where(later)
            handed_back = update(t.outbox).where(later).values(published_at=None, check_first=True)
            if withheld:
                again = again.where(t.outbox.c.id.not_in(withheld))
                handed_back = handed_back.where(t.outbox.c.id.not_in(withheld))
            requeued = conn.execute(again).all()
            conn.execute(handed_back)
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.sent_offset.is_not(None))
                .values(sent_partition=None, sent_offset=None)
            )
        return BrokerLoss(
            lost=tuple(LostOnTopic(r[0], int(r[1]), r[2], r[3]) for r in lost),
            requeued={r[0]: int(r[1]) for r in requeued},
            withheld=len(withheld),
        )

    def requeue_published(
        self,
        since: datetime | None,
        topic: str | None = None,
        recipients: Mapping[str, str] | None = None,
        *,
        refused: bool = False,
    ) -> tuple[int, int]:
        """`schakel outbox requeue`: rows published since `since` (if given; with `refused`,
        only those the broker refused as too large) are sent again (same ce_id), except
        releases and updates whose release has been revoked since (`_withheld`): refused
        ones of those can never be sent, so they are refused no more and go with the
        published rows' retention (`prune_outbox`). Returns (sent again, withheld)."""
        chosen: list[ColumnElement[bool]] = []
        if since is not None:
            chosen.append(t.outbox.c.published_at >= since)
        if refused:
            chosen.append(t.OUTBOX_REFUSED)
        if not chosen:
            raise ValueError("requeue needs a moment or the refused messages")
        if topic is not None:
            chosen.append(t.outbox.c.topic == topic)
            recipients = {k: v for k, v in (recipients or {}).items() if k == topic}
        where = and_(*chosen)
        with self.engine.begin() as conn:
            withheld = self._withheld(conn, where, recipients)
            query = update(t.outbox).where(where)
            if withheld:
                query = query.where(t.outbox.c.id.not_in(withheld))
                conn.execute(
                    update(t.outbox)
                    .where(t.outbox.c.id.in_(withheld), t.OUTBOX_REFUSED)
                    .values(refused_at=None)
                )
            count = conn.execute(
                query.values(
                    published_at=None, sent_partition=None, sent_offset=None, refused_at=None
                )
            ).rowcount
        return int(count or 0), len(withheld)

    # --- reads ---------------------------------------------------------------------
    def registration(self, registration_id: str) -> RegistrationView | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.registrations).where(t.registrations.c.registration_id == registration_id)
            ).first()
            if row is None:
                return None
            events = timeline_rows(conn, registration_id)
        return RegistrationView(
            registration_id=row.registration_id,
            referral_id=row.referral_id,
            recipient_id=row.recipient_id,
            status=row.status,
            timeline=tuple(TimelineEntry(e.status, e.at, e.by) for e in events),
        )

    def registration_of_referral(self, referral_id: str) -> RegistrationView | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.referrals.c.registration_id).where(
                    t.referrals.c.referral_id == referral_id
                )
            ).first()
        return self.registration(row.registration_id) if row else None

    def patient_of_referral(self, referral_id: str) -> str | None:
        """The BSN of a referral the hub holds, or None: for the audit trail of an access
        that names the referral but not the patient."""
        with self.engine.connect() as conn:
            bsn = conn.execute(
                select(t.referrals.c.patient_bsn).where(t.referrals.c.referral_id == referral_id)
            ).scalar()
        return str(bsn) if bsn else None

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(t.metadata.tables[table])
            return int(conn.execute(query).scalar_one())

    def processing_order(
        self, batch: int = 20_000
    ) -> Iterator[tuple[int, str, int, int, int | None]]:
        """(seq, topic, partition, offset, timestamp) in the order the hub applied them."""
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                select(t.processing_log).order_by(t.processing_log.c.seq)
            )
            for r in result:
                yield r.seq, r.topic, r.partition, r.offset, r.timestamp_ms

    def audit_hash(self, seq: int) -> str | None:
        """The stored hash of entry `seq`, or None when there is none."""
        with self.engine.connect() as conn:
            found = conn.execute(select(t.audit_log.c.hash).where(t.audit_log.c.seq == seq))
            return found.scalar_one_or_none()

    def audit_rows(self, batch: int = 20_000) -> Iterator[tuple[Any, ...]]:
        """Every audit row in stored order, streamed: the chain's columns (seq, prev_hash,
        hash, canonical), then those the reports select by and show (AUDIT_ROW)."""
        columns = t.audit_log.c
        query = select(*(columns[name] for name in AUDIT_ROW)).order_by(columns.seq)
        with self.engine.connect() as conn:
            yield from conn.execution_options(stream_results=True, yield_per=batch).execute(query)

    def audit_entries(
        self, *, referral_id: str | None = None, patient: str | None = None
    ) -> list[AuditEntry]:
        query = select(t.audit_log).order_by(t.audit_log.c.seq)
        if referral_id is not None:
            query = query.where(t.audit_log.c.referral_id == referral_id)
        if patient is not None:
            query = query.where(t.audit_log.c.patient == patient)
        with self.engine.connect() as conn:
            return [
                AuditEntry(
                    seq=r.seq,
                    recorded=r.recorded_at,
                    action=r.action,
                    actor=r.actor,
                    recipient=r.recipient,
                    referral_id=r.referral_id,
                    registration_id=r.registration_id,
                    patient=r.patient,
                    consent_id=r.consent_id,
                    canonical=r.canonical,
                    hash=r.hash,
                    prev_hash=r.prev_hash,
                )
                for r in conn.execute(query)
            ]

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # --- console sessions --------------------------------------------------------------
    def end_session(self, session_id: str, expires: datetime) -> None:
        """A console session signed out: its cookie is refused from now on, until it would
        have expired anyway (then its row goes, with the other expired ones)."""
        ended = t.ended_sessions

        def work(tx: Tx) -> None:
            tx.conn.execute(delete(ended).where(ended.c.ends_at < self._now()))
            known = select(1).where(ended.c.session_id == session_id)
            if tx.conn.execute(known).first() is None:
                tx.conn.execute(insert(ended).values(session_id=session_id, ends_at=expires))

        # retried on conflicts like every transaction; IntegrityError: signed out at the
        # same moment through another instance
        with contextlib.suppress(IntegrityError):
            self.run(work)

    def session_ended(self, session_id: str) -> bool:
        ended = t.ended_sessions
        with self.engine.connect() as conn:
            query = select(1).where(ended.c.session_id == session_id)
            return conn.execute(query).first() is not None

    def dispose(self) -> None:
        self.engine.dispose()


def _busy_timeout(conn: Connection, ms: int) -> None:
    """How long SQLite waits for a lock on this connection. On the DBAPI connection: a
    statement through SQLAlchemy would begin a transaction. Its errors are SQLAlchemy's."""
    sql = f"PRAGMA busy_timeout = {int(ms)}"
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    try:
        dbapi.execute(sql)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: SQL errors never carry the values (personal data) into a log line
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_LOCK_WAIT_MS / 1000}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy's begin() below decide
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(
        url, isolation_level="SERIALIZABLE", pool_pre_ping=True, hide_parameters=True
    )
    event.listen(engine, "after_cursor_execute", answers_now)  # see `pipelined`
    return engine


RELAY_LOCK_KEY = 0x5C4A4B45  # PostgreSQL advisory lock key of the outbox relay ("SKLE")
RELAY_LOCK_SESSION = (
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
)
"""The lock holder's session settings on the server's side of its connection: a holder whose
host or network vanishes without closing it is found gone, and its lock freed, after about
25 s of silence (10 s idle, then three probes 5 s apart; 30 s for data never acknowledged),
instead of PostgreSQL's default of the operating system's (about 2 h 11 min), during which
no instance relays. A holder that is alive answers the probes from its kernel, whatever it
is doing; one cut off that long loses the lock, finds that out at its next check, and the
next holder looks on the topics before it sends (as after a crash). Not in effect over a
Unix socket, where no network can vanish."""


class RelayLock:
    """Held by at most one process per store, and released by the operating system or the
    database the moment its holder dies (no lease to time out, so a restarted or surviving
    instance takes over at once). PostgreSQL: a session advisory lock on a connection of its
    own. SQLite (one host): `flock` on a file beside the database."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Connection | None = None
        self._file: Any = None

    def acquire(self) -> bool:
        """True if this process holds the lock now (taken, or still held)."""
        if self.store.dialect == "postgresql":
            return self._acquire_pg()
        return self._acquire_file()

    def held_for_sure(self) -> bool:
        """Held, and no check needed to know it: a file lock is held while its file is
        open (a PostgreSQL session lock is checked by `acquire`, the session may be gone)."""
        return self._file is not None

    def _acquire_pg(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except DBAPIError:  # the session, and with it the lock, is gone
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
        conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": RELAY_LOCK_KEY}
            ).scalar_one()
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        try:
            conn.execute(
                text(
                    "SELECT "
                    + ", ".join(f"set_config('{n}', '{v}', false)" for n, v in RELAY_LOCK_SESSION)
                )
            )
        except DBAPIError as exc:  # an older server (tcp_user_timeout: PostgreSQL 12)
            log.warning(
                "relay lock: the session's keepalive not shortened; a vanished holder's lock "
                "lasts until the server's TCP keepalive ends its session (deploy/README.md)",
                error=type(exc).__name__,
            )
        self._conn = conn
        return True

    def _acquire_file(self) -> bool:
        import fcntl

        if self._file is not None:
            return True
        database = self.store.engine.url.database
        if not database or database == ":memory:":
            return True  # one process by construction
        handle = open(f"{database}.relay-lock", "a+b")  # noqa: SIM115 - held while we run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RELAY_LOCK_KEY})
            except Exception:  # noqa: BLE001 - then the session must not go back to the pool
                with contextlib.suppress(Exception):
                    self._conn.invalidate()  # closing the session drops its lock
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None
