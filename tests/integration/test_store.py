"""The store on SQLite and PostgreSQL: same code, same results."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from adapters.fhir.consent import consent_from_fhir
from adapters.fhir.referral import referral_from_fhir
from adapters.storage import tables as t
from adapters.storage.store import Store, Tx
from adapters.storage.tables import metadata
from schemas.consent import Consent, ReferralRef
from schemas.messages import OutboundMessage
from schemas.participants import Participants
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle
from services.domain import gate

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WELFARE = "welzijn-hoogeveen"


def test_migrations_are_idempotent_and_match_the_tables(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    store.migrate()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.dispose()
    assert diff == []


def test_the_upgrade_marks_consents_whose_period_ended_before_it(store_url: str) -> None:
    """Migration 0015: active consents with a period end get `expires_at`, so the first
    tick after the upgrade ends those whose period is over; others get none."""
    from sqlalchemy import insert, select

    from adapters.storage.migrate import upgrade

    store = Store(store_url)
    upgrade(store.engine, "0014")
    ended = datetime(2026, 11, 30, 22, 59, 59, 999999, tzinfo=UTC)
    rows = [
        ("c-ended", "active", ended),
        ("c-open", "active", None),
        ("c-withdrawn", "inactive", ended),
    ]
    with store.engine.begin() as conn:
        for consent_id, status, end in rows:
            body = Consent(
                consent_id=consent_id, status=status, patient_bsn="999900018", period_end=end
            )
            conn.execute(
                insert(t.consents).values(
                    consent_id=consent_id,
                    status=status,
                    kind="permit",
                    patient_bsn="999900018",
                    names_referrals=False,
                    body=body.model_dump_json(),
                    received_at=NOW,
                    updated_at=NOW,
                )
            )
    store.migrate()
    with store.engine.connect() as conn:
        marked = {
            row.consent_id: row.expires_at
            for row in conn.execute(select(t.consents.c.consent_id, t.consents.c.expires_at))
        }
    due = store.run(lambda tx: [c.consent_id for c in tx.consents_ending(NOW)])
    store.dispose()
    assert marked == {
        "c-ended": ended + timedelta(microseconds=1),
        "c-open": None,
        "c-withdrawn": None,
    }
    assert due == ["c-ended"]


def test_a_consent_is_ending_from_the_moment_after_its_period_until_marked(
    store_url: str,
) -> None:
    end = datetime(2026, 12, 2, 22, 59, 59, 999999, tzinfo=UTC)
    consent = Consent(consent_id="c-end", status="active", patient_bsn="999900018", period_end=end)
    store = Store(store_url)
    store.migrate()
    store.run(lambda tx: tx.put_consent(consent, NOW))
    ending = [
        store.run(lambda tx, at=at: [c.consent_id for c in tx.consents_ending(at)])
        for at in (end, end + timedelta(microseconds=1))
    ]
    due = store.run(lambda tx: tx.next_due())
    store.run(lambda tx: tx.mark_ended("c-end"))
    after = store.run(lambda tx: tx.consents_ending(end + timedelta(days=1)))
    withdrawn = consent.model_copy(update={"status": "inactive"})
    store.run(lambda tx: tx.put_consent(consent, NOW))  # sent again: ending again
    again = store.run(lambda tx: [c.consent_id for c in tx.consents_ending(end + timedelta(1))])
    store.run(lambda tx: tx.put_consent(withdrawn, NOW))  # withdrawn: nothing to end
    gone = store.run(lambda tx: tx.consents_ending(end + timedelta(days=1)))
    store.dispose()
    assert ending == [[], ["c-end"]], "in force to its last microsecond"
    assert due == end + timedelta(microseconds=1), "the replay ticks at that moment"
    assert after == [] and again == ["c-end"] and gone == []


INDEX_NAMES = (
    "ix_consents_not_started",
    "ix_consents_expiring",
    "ix_registrations_contact_open",
    "ix_registrations_retention",
)


def test_the_timers_questions_read_what_is_due_not_the_history(store_url: str) -> None:
    """A tick holds the write lock: each of its questions must be answered from a partial
    index (rows still to act on), never by reading every consent or registration."""
    store = Store(store_url)
    store.migrate()
    asked: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            asked.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", grab)
    store.run(
        lambda tx: (
            tx.consents_starting(NOW),
            tx.consents_ending(NOW),
            tx.registrations_due(NOW),
            tx.purge_expired(NOW),
        )
    )
    event.remove(store.engine, "before_cursor_execute", grab)
    assert len(asked) == 4
    used: set[str] = set()
    with store.engine.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:  # any plan PostgreSQL can make without reading the table through
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, parameters in asked:
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            plan = " | ".join(
                str(r[-1]) for r in conn.exec_driver_sql(explain + statement, parameters)
            )
            assert "SCAN consents" not in plan and "SCAN registrations" not in plan, plan
            assert "Seq Scan" not in plan, plan
            used |= {name for name in INDEX_NAMES if name in plan}
        definitions = {
            name: conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?"
                if sqlite
                else "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                (name,),
            ).scalar()
            for name in INDEX_NAMES
        }
    store.dispose()
    assert used == set(INDEX_NAMES)
    assert all(" WHERE " in (d or "").upper() for d in definitions.values()), definitions


def test_a_held_referral_survives_a_new_store(store_url: str, participants: Participants) -> None:
    referral = referral_from_fhir(referral_bundle("VERW-S-1"), participants)
    store = Store(store_url)
    store.migrate()
    store.run(lambda tx: gate.on_referral(tx, referral, WELFARE, NOW))
    store.dispose()

    reopened = Store(store_url)
    held = reopened.run(lambda tx: tx.referral("VERW-S-1"))
    assert held is not None and held.referral == referral
    assert held.referral.client.bsn == referral.client.bsn
    assert held.received_at == NOW
    consent = consent_from_fhir(consent_resource("c-s-1", referral_id="VERW-S-1"), participants)
    result = reopened.run(lambda tx: gate.on_consent(tx, consent, NOW))
    assert [r.referral_id for r in result.releases] == ["VERW-S-1"]
    view = reopened.registration_of_referral("VERW-S-1")
    assert view is not None
    assert [e.status for e in view.timeline] == ["received", "waiting-for-consent", "released"]
    assert all(e.at == NOW for e in view.timeline)
    reopened.dispose()


def test_migration_0010_fills_each_held_referrals_practice(
    store_url: str, participants: Participants
) -> None:
    from sqlalchemy import column, insert, select, table

    from adapters.storage.migrate import upgrade
    from schemas.registration import StoredReferral

    store = Store(store_url)
    upgrade(store.engine, "0009")
    before = table(  # the referrals table as 0009 left it: no practice column
        "referrals",
        *(
            column(c)
            for c in (
                "referral_id",
                "registration_id",
                "recipient_id",
                "patient_bsn",
                "body",
                "received_at",
                "updated_at",
            )
        ),
    )
    bodies = {}
    for referral_id, agb in (("VERW-M-1", "01012345"), ("VERW-M-2", "01054321")):
        referral = referral_from_fhir(referral_bundle(referral_id, practice_agb=agb), participants)
        stored = StoredReferral(
            referral=referral, recipient_id=WELFARE, registration_id="reg-m", received_at=NOW
        )
        bodies[referral_id] = stored.model_dump_json()
        with store.engine.begin() as conn:
            conn.execute(
                insert(before).values(
                    referral_id=referral_id,
                    registration_id="reg-m",
                    recipient_id=WELFARE,
                    patient_bsn=str(referral.client.bsn),
                    body=bodies[referral_id],
                    received_at=NOW,
                    updated_at=NOW,
                )
            )
    store.migrate()
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.referrals.c.referral_id, t.referrals.c.practice_id))
        filled = {referral_id: practice for referral_id, practice in rows}
    store.dispose()
    assert filled == {"VERW-M-1": "praktijk-de-linde", "VERW-M-2": "praktijk-het-anker"}


def test_outbox_keeps_one_copy_per_message_id_and_round_trips_bytes(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    message = OutboundMessage(
        "id-1",
        "topic-a",
        None,
        b"\x00\xffvalue",
        (("h", b"\xff"), ("h", b"2"), ("empty", b""), ("none", None)),
    )
    store.run(lambda tx: tx.add_outbox(message))
    store.run(lambda tx: tx.add_outbox(message))

    def twice_and_another(tx: Tx) -> None:  # written together, at the end (one executemany)
        tx.add_outbox(message)
        tx.add_outbox(replace(message, message_id="id-2"))
        tx.add_outbox(message)

    store.run(twice_and_another)
    row, second = store.pending_outbox()
    assert row.message == message
    assert second.message.message_id == "id-2"
    assert row.id < second.id
    store.mark_published([(second.id, 0, 40)])
    store.mark_published([(row.id, 0, 41)])
    assert store.pending_outbox() == []
    store.dispose()


def test_writes_kept_for_later_follow_savepoints_and_reads_see_them(
    store_url: str, participants: Participants
) -> None:
    """Outbox rows, audit rows and status changes are written at the end of a transaction
    or savepoint: a savepoint rolled back takes its own with it and nothing else, and the
    transaction reads its own status changes before they are written."""
    referral = referral_from_fhir(referral_bundle("VERW-S-9"), participants)
    store = Store(store_url)
    store.migrate()

    def work(tx: Tx) -> tuple[str | None, str | None]:
        gate.on_referral(tx, referral, WELFARE, NOW)
        stored = tx.referral("VERW-S-9")
        assert stored is not None
        tx.add_outbox(OutboundMessage("kept", "topic-a", None, b"1", ()))
        try:
            with tx.savepoint():
                tx.add_outbox(OutboundMessage("rolled-back", "topic-a", None, b"2", ()))
                tx.add_status(stored.registration_id, "overdue", NOW, "test")
                raise RuntimeError("this record fails")
        except RuntimeError:
            pass
        after_rollback = tx.registration(stored.registration_id)
        with tx.savepoint():
            tx.add_outbox(OutboundMessage("in-savepoint", "topic-a", None, b"3", ()))
            tx.add_status(stored.registration_id, "released", NOW, "test")
        in_tx = tx.registration(stored.registration_id)
        return (after_rollback.status if after_rollback else None, in_tx.status if in_tx else None)

    after_rollback, in_tx = store.run(work)
    assert after_rollback == "waiting-for-consent"
    assert in_tx == "released"
    assert [r.message.message_id for r in store.pending_outbox()] == ["kept", "in-savepoint"]
    view = store.registration_of_referral("VERW-S-9")
    assert view is not None and view.status == "released"
    assert [e.status for e in view.timeline] == ["received", "waiting-for-consent", "released"]
    store.dispose()


def test_statements_on_the_cursor_read_and_write_what_sqlalchemy_does(store_url: str) -> None:
    """The hot statements run on the DBAPI cursor (adapters/storage/direct.py): what they
    write is stored as SQLAlchemy stores it and reads back unchanged (aware UTC datetimes, booleans, bytes),
    what SQLAlchemy wrote reads back through them, and a refused write raises SQLAlchemy's
    own exception class, which the retries and dead-letter paths catch."""
    from sqlalchemy import bindparam, insert, select
    from sqlalchemy.exc import IntegrityError

    from adapters.storage import tables as t
    from adapters.storage.direct import Direct

    store = Store(store_url)
    store.migrate()
    amsterdam = datetime(2026, 12, 1, 13, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Amsterdam"))
    row = {
        "consent_id": "c-direct",
        "status": "active",
        "kind": "permit",
        "patient_bsn": None,
        "names_referrals": True,
        "period_start": amsterdam,
        "started": False,
        "body": "{}",
        "received_at": NOW,
        "updated_at": NOW,
    }
    by_sqlalchemy = {**row, "consent_id": "c-sqlalchemy"}
    with store.engine.begin() as conn:
        db = Direct(conn)
        assert db.execute(insert(t.consents), row) == 1
        conn.execute(insert(t.consents), by_sqlalchemy)
        read = select(t.consents.c.period_start, t.consents.c.started, t.consents.c.received_at)
        for consent_id in ("c-direct", "c-sqlalchemy"):
            one = read.where(t.consents.c.consent_id == consent_id)
            assert tuple(conn.execute(one).one()) == (amsterdam, False, NOW)
            assert db.rows(one, {}) == [(amsterdam, False, NOW)]
        # stored alike too (SQLite compares the text): the driver's own adapter would not
        raw = conn.exec_driver_sql(
            "SELECT period_start, started, received_at FROM consents ORDER BY consent_id DESC"
        ).all()
        assert raw[0] == raw[1]
        for got in (tuple(conn.execute(one).one()), db.rows(one, {})[0]):
            assert got[0].tzinfo is not None and got[0].utcoffset().total_seconds() == 0
        db.execute_many(
            insert(t.outbox),
            [
                {
                    "message_id": f"m-{i}",
                    "topic": "x",
                    "key": None,
                    "value": bytes([i, 0]),
                    "headers": "[]",
                    "created_at": NOW,
                }
                for i in range(3)
            ],
        )
        assert [r.value for r in conn.execute(select(t.outbox).order_by(t.outbox.c.id))] == [
            b"\x00\x00",
            b"\x01\x00",
            b"\x02\x00",
        ]
        # IN lists (a placeholder per value), beside a plain parameter: SQLAlchemy's rows
        in_lists = (
            select(t.consents.c.consent_id, t.consents.c.period_start)
            .where(
                t.consents.c.consent_id.in_(bindparam("b_ids", expanding=True)),
                t.consents.c.received_at <= bindparam("b_at"),
            )
            .order_by(t.consents.c.consent_id)
        )
        for ids in (["c-direct"], ["c-sqlalchemy", "c-none", "c-direct"], ["c-none"]):
            values = {"b_ids": ids, "b_at": NOW}
            assert db.rows(in_lists, values) == [tuple(r) for r in conn.execute(in_lists, values)]
        assert len(db.rows(in_lists, {"b_ids": ["c-direct", "c-sqlalchemy"], "b_at": NOW})) == 2
        for n in range(1, 21):  # lists of every length, padded: a handful of texts
            values = {"b_ids": [f"c-{i}" for i in range(n - 1)] + ["c-direct"], "b_at": NOW}
            assert db.rows(in_lists, values) == [tuple(r) for r in conn.execute(in_lists, values)]
        texts = db._compiled(in_lists, None)._texts  # noqa: SLF001
        assert sorted(n for (n,) in texts) == [1, 2, 4, 8, 16, 32]
        with pytest.raises(ValueError, match="empty IN list"):
            db.rows(in_lists, {"b_ids": [], "b_at": NOW})
    with pytest.raises(IntegrityError) as refused, store.engine.begin() as conn:
        Direct(conn).execute(insert(t.consents), row)  # the same primary key again
    # the parameters (personal data) stay out of its text; the database's own words may not
    assert "parameters hidden" in str(refused.value)
    with pytest.raises(IntegrityError) as refused, store.engine.begin() as conn:
        conn.execute(insert(t.consents), by_sqlalchemy)  # and through SQLAlchemy's own path
    assert "parameters hidden" in str(refused.value)
    store.dispose()


def test_a_connection_lost_under_a_statement_on_the_cursor_is_invalidated(
    postgres_url: str,
) -> None:
    """PostgreSQL ends the session in the middle of a transaction: the statement on the
    cursor raises SQLAlchemy's OperationalError marked as a lost connection (what the
    pipeline's outage handling waits out), and the pool hands out a working connection
    next instead of the dead one."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from adapters.storage.direct import Direct
    from adapters.storage.store import _S

    store = Store(postgres_url)
    store.migrate()
    conn = store.engine.connect()
    conn.begin()
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with store.engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(OperationalError) as raised:
        Direct(conn).rows(_S.secret, {"b_id": "pseudonym-key"})
    assert raised.value.connection_invalidated
    assert conn.invalidated
    conn.close()
    assert store.run(lambda tx: tx.secret("a-name", lambda: "made")) == "made"
    store.dispose()


def test_published_outbox_rows_go_after_their_keep_time_and_dead_letters_stay(
    store_url: str, participants: Participants
) -> None:
    """The outbox's copies of published messages (they carry personal data) are deleted by
    the timer tick once published longer ago than `SCHAKEL_OUTBOX_KEEP_DAYS`; unpublished
    rows, recent ones, dead letters (which `schakel dlq` reads) and messages the broker
    refused as too large (unsent: `schakel outbox refused`) stay."""
    from datetime import timedelta

    from schemas.topics import Topics
    from services.runtime import Hub
    from services.settings import HubSettings
    from services.timers.handlers import tick

    clock = [NOW]
    store = Store(store_url, now=lambda: clock[0])
    store.migrate()
    topics = Topics("")
    messages = {"old": "welfare-a", "old-dead": topics.dead_letter, "recent": "welfare-a"}
    messages |= {"pending": "welfare-a", "old-2": "gp-b", "old-refused": "welfare-a"}

    def add(tx: Tx) -> None:
        for message_id, topic in messages.items():
            tx.add_outbox(OutboundMessage(message_id, topic, None, b"x", ()))

    store.run(add)
    row = {r.message.message_id: r.id for r in store.pending_outbox()}
    store.mark_published([(row[m], 0, i) for i, m in enumerate(("old", "old-dead", "old-2"))])
    store.mark_published([(row["old-refused"], None, None)], refused={row["old-refused"]})
    clock[0] = NOW + timedelta(days=6)
    store.mark_published([(row["recent"], 0, 9)])
    clock[0] = NOW + timedelta(days=7, minutes=1)

    assert store.run(lambda tx: tx.prune_outbox(timedelta(days=7), topics.dead_letter, 1)) == 1
    hub = Hub(
        settings=HubSettings(outbox_keep_days=7),
        participants=participants,
        store=store,
        topics=topics,
        clock=lambda: clock[0],
    )
    tick(hub)
    left = {
        r.message.message_id
        for topic in set(messages.values())
        for r in store.outbox_rows(topic=topic)
    }
    assert left == {"old-dead", "recent", "pending", "old-refused"}
    store.dispose()


class _PauseAfterRead:
    """Wraps a transaction: after its first `method` read, waits (once) for the other
    transaction to have read too. That forces the write-skew interleaving: both have looked
    for the other's row before either committed."""

    def __init__(self, tx: Any, method: str, barrier: threading.Barrier, first: list[bool]) -> None:
        self._tx, self._method, self._barrier, self._first = tx, method, barrier, first

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tx, name)
        if name != self._method:
            return attr

        def read(*args: Any) -> Any:
            result = attr(*args)
            if self._first[0]:
                self._first[0] = False
                try:
                    self._barrier.wait(timeout=0.5)  # SQLite serialises at BEGIN: times out
                except threading.BrokenBarrierError:
                    pass
            return result

        return read


def test_concurrent_referral_and_consent_never_miss_each_other(
    store_url: str, participants: Participants
) -> None:
    """Two consumers, one with the referral and one with its consent, in transactions that
    overlap: exactly one release, every time (SERIALIZABLE on PostgreSQL, BEGIN IMMEDIATE
    on SQLite, retried on conflict)."""
    store = Store(store_url)
    store.migrate()
    rounds = 6
    for i in range(rounds):
        rid = f"VERW-RACE-{i}"
        referral = referral_from_fhir(referral_bundle(rid), participants)
        consent = consent_from_fhir(consent_resource(f"c-race-{i}", referral_id=rid), participants)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(work: Any) -> None:
            try:
                store.run(work)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        first_r, first_c = [True], [True]
        threads = [
            threading.Thread(
                target=run,
                args=(
                    lambda tx: gate.on_referral(
                        _PauseAfterRead(tx, "consents_for", barrier, first_r),
                        referral,
                        WELFARE,
                        NOW,
                    ),
                ),
            ),
            threading.Thread(
                target=run,
                args=(
                    lambda tx: gate.on_consent(
                        _PauseAfterRead(tx, "referral", barrier, first_c), consent, NOW
                    ),
                ),
            ),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
    assert store.count("releases") == rounds
    store.dispose()


def test_closed_registrations_are_kept_until_their_retention_ends(
    store_url: str, participants: Participants
) -> None:
    from datetime import timedelta

    from schemas.feedback import WelfareFeedback
    from services.domain.feedback import on_feedback

    policy = gate.GatePolicy(retention=timedelta(days=30))
    store = Store(store_url)
    store.migrate()
    referral = referral_from_fhir(referral_bundle("VERW-RT-1"), participants)
    consent = consent_from_fhir(consent_resource("c-rt", referral_id="VERW-RT-1"), participants)
    store.run(lambda tx: gate.on_referral(tx, referral, WELFARE, NOW, policy))
    store.run(lambda tx: gate.on_consent(tx, consent, NOW, policy))
    done = WelfareFeedback(
        referral_id="VERW-RT-1",
        organisation=WELFARE,
        status="completed",
        occurred_at=NOW,
        summary="Afgerond.",
    )
    store.run(lambda tx: on_feedback(tx, done, NOW, policy))
    assert store.run(lambda tx: tx.purge_expired(NOW + timedelta(days=29))) == 0
    assert store.run(lambda tx: tx.referral("VERW-RT-1")) is not None, "kept within retention"
    assert store.run(lambda tx: tx.purge_expired(NOW + timedelta(days=31))) == 1
    assert store.run(lambda tx: tx.referral("VERW-RT-1")) is None, "personal data gone after it"
    view = store.registration_of_referral("VERW-RT-1")
    assert view is None  # the referral row is gone, the registration and its timeline stay
    reg = store.run(lambda tx: tx.registration(gate.registration_id_for("VERW-RT-1", WELFARE)))
    assert reg is not None
    assert reg.status == "completed"
    assert store.run(lambda tx: tx.purge_expired(NOW + timedelta(days=400))) == 0, "once"
    store.dispose()


_REFERRALS = ("VERW-K-0", "VERW-K-1", "VERW-K-2")
_CONSENT_IDS = ("c-k-0", "c-k-1", "c-k-2", "c-k-3")


@st.composite
def _consents(draw: st.DrawFn, bsns: tuple[str, ...]) -> Consent:
    named = draw(st.lists(st.sampled_from(_REFERRALS), max_size=2, unique=True))
    return Consent(
        consent_id=draw(st.sampled_from(_CONSENT_IDS)),
        status=draw(st.sampled_from(("active", "inactive"))),
        kind=draw(st.sampled_from(("permit", "objection"))),
        patient_bsn=draw(st.sampled_from((None, *bsns))),
        referrals=tuple(ReferralRef(value=r) for r in named),
    )


def _expected(consents: dict[str, Consent], referral_id: str, bsn: str) -> list[Consent]:
    """What `consents_for` means (the in-memory reference of tests/unit/fakes.py)."""
    return sorted(
        (
            c
            for c in consents.values()
            if any(r.value == referral_id for r in c.referrals)
            or (not c.referrals and c.patient_bsn == bsn)
        ),
        key=lambda c: c.consent_id,
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_consents_for_kept_in_the_transaction_agrees_with_the_store(
    store_url: str, data: st.DataObject
) -> None:
    """`consents_for` is answered from what the transaction read (or prefetched) and wrote,
    kept current by every `put_consent`: it must say what the store says, whatever the
    order of reads, prefetches and writes (consents gaining and losing referrals, moving
    between patient level and referral level, changing patient)."""
    bsns = (fictional_bsn(0), fictional_bsn(1))
    store = Store(store_url)
    store.migrate()
    with store.engine.begin() as conn:  # each example starts empty
        conn.execute(t.consent_referrals.delete())
        conn.execute(t.consents.delete())
    queries = [(r, b) for r in _REFERRALS for b in bsns]
    earlier = data.draw(st.lists(_consents(bsns), max_size=4), label="committed before")
    later = data.draw(st.lists(_consents(bsns), min_size=1, max_size=8), label="in the transaction")
    prefetch_at = data.draw(st.integers(0, len(later)), label="prefetch before write no.")
    prefetched = data.draw(st.lists(st.sampled_from(queries), max_size=4), label="prefetched")
    asked = data.draw(st.lists(st.sampled_from(queries), max_size=6), label="asked early")
    truth: dict[str, Consent] = {}

    def put_all(tx: Tx, consents: list[Consent]) -> None:
        for consent in consents:
            tx.put_consent(consent, NOW)
            truth[consent.consent_id] = consent

    store.run(lambda tx: put_all(tx, earlier))

    def work(tx: Tx) -> None:
        for referral_id, bsn in asked:  # read (and kept) before the writes
            assert tx.consents_for(referral_id, bsn) == _expected(truth, referral_id, bsn)
        for i, consent in enumerate(later):
            if i == prefetch_at:
                tx.prefetch(consents_for=prefetched)
            put_all(tx, [consent])
            for referral_id, bsn in queries:
                assert tx.consents_for(referral_id, bsn) == _expected(truth, referral_id, bsn)

    store.run(work)
    for referral_id, bsn in queries:  # a new transaction reads the store itself
        assert store.run(lambda tx, r=referral_id, b=bsn: tx.consents_for(r, b)) == _expected(
            truth, referral_id, bsn
        )
    store.dispose()


def test_released_before_from_a_prefetch_agrees_with_the_store(store_url: str) -> None:
    """`registration_released_before` answers from a batch's prefetch of each registration's
    releases, kept current by the transaction's own releases: always what the store's query
    says at that moment (checked against it after every step, on both dialects)."""
    from adapters.storage.store import _S
    from schemas.registration import ReleaseState

    store = Store(store_url)
    store.migrate()

    def release(referral: str, recipient: str, registration: str) -> ReleaseState:
        return ReleaseState(
            referral_id=referral,
            recipient_id=recipient,
            registration_id=registration,
            consent_id="C-1",
            released_at=NOW,
            fingerprint="f",
        )

    store.run(lambda tx: tx.record_release(release("R-1", "W-1", "REG-1")))
    questions = [
        (registration, recipient, referral)
        for registration in ("REG-1", "REG-2")
        for recipient in ("W-1", "W-2")
        for referral in ("R-1", "R-2", "R-3")
    ]

    def work(tx: Tx) -> list[list[bool]]:
        tx.prefetch(registrations=["REG-1", "REG-2"])
        assert set(tx._registration_releases) == {"REG-1", "REG-2"}  # answered from here
        answers: list[list[bool]] = []
        steps = [
            None,
            release("R-2", "W-2", "REG-1"),  # REG-1 now reached W-2 too
            release("R-3", "W-1", "REG-2"),  # a registration with no release before
        ]
        for step in steps:
            if step is not None:
                tx.record_release(step)
            cached = [tx.registration_released_before(*q) for q in questions]
            asked = [
                bool(tx._db.rows(_S.released_before, {"b_reg": g, "b_rcp": r, "b_id": f}))
                for g, r, f in questions
            ]
            assert cached == asked, step
            answers.append(cached)
        return answers

    answers = store.run(work)
    assert answers[0][questions.index(("REG-1", "W-1", "R-2"))] is True
    assert answers[0][questions.index(("REG-1", "W-1", "R-1"))] is False  # its own release
    assert answers[0][questions.index(("REG-1", "W-2", "R-3"))] is False
    assert answers[1][questions.index(("REG-1", "W-2", "R-3"))] is True  # kept current
    assert answers[2][questions.index(("REG-2", "W-1", "R-1"))] is True
    store.dispose()


def test_open_registration_from_a_prefetch_agrees_with_the_store(
    store_url: str, participants: Participants
) -> None:
    """`open_registration` answers from a batch's prefetch of its patients' registrations
    not closed, kept current by the transaction's new and closed registrations: always what
    the store's query says at that moment (after every step, on both dialects)."""
    from adapters.storage.store import _S

    store = Store(store_url)
    store.migrate()
    x, y = fictional_bsn(31), fictional_bsn(32)
    first = referral_from_fhir(referral_bundle("VERW-OR-1", bsn=x), participants)
    store.run(lambda tx: gate.on_referral(tx, first, WELFARE, NOW))
    questions = [(b, r) for b in (x, y) for r in (WELFARE, "welzijn-de-wolden")]

    def check(tx: Tx) -> list[str | None]:
        cached = [tx.open_registration(b, r) for b, r in questions]
        asked = [
            (
                rows[0][0]
                if (rows := tx._db.rows(_S.open_registration, {"b_bsn": b, "b_rcp": r}))
                else None
            )
            for b, r in questions
        ]
        assert cached == asked
        return cached

    def work(tx: Tx) -> list[list[str | None]]:
        tx.prefetch(patients=[x, y])
        assert set(tx._open_registrations) == {x, y}  # answered from here
        seen = [check(tx)]
        stored = tx.referral("VERW-OR-1")
        assert stored is not None
        tx.close_registration(stored.registration_id, NOW, NOW)
        seen.append(check(tx))
        second = referral_from_fhir(referral_bundle("VERW-OR-2", bsn=x), participants)
        gate.on_referral(tx, second, WELFARE, NOW)  # a new registration: the first is closed
        seen.append(check(tx))
        return seen

    seen = store.run(work)
    assert seen[0][0] is not None and seen[0][1:] == [None, None, None]
    assert seen[1] == [None, None, None, None]
    assert seen[2][0] is not None and seen[2][0] != seen[0][0]
    store.dispose()


def test_a_conflict_inside_a_savepoint_is_retried(postgres_url: str) -> None:
    """On PostgreSQL a serialization failure of a pipelined write inside a savepoint (as each
    timer tick's consent start runs) surfaces as psycopg's "pipeline aborted", with no
    SQLSTATE; the transaction is run again like any other conflict (it failed the tick,
    which then waited its 30 s interval, found with several instances on one store)."""
    from sqlalchemy import select

    from adapters.storage import tables
    from adapters.storage.store import _S

    first, other = Store(postgres_url), Store(postgres_url)
    first.migrate()
    first.run(lambda tx: tx._db.write(_S.insert_counter, {"name": "sp-test", "value": 0}))
    attempts = []

    def work(tx) -> None:  # type: ignore[no-untyped-def]
        attempts.append(1)
        value = tx._db.rows(_S.counter, {"b_id": "sp-test"})[0][0]  # the snapshot is taken
        if len(attempts) == 1:  # another instance commits a change of the same row meanwhile
            other.run(lambda t2: t2._db.write(_S.set_counter, {"b_id": "sp-test", "value": 100}))
        with tx.savepoint():
            tx._db.write(_S.set_counter, {"b_id": "sp-test", "value": value + 1})
            tx.conn.execute(select(tables.counters.c.value))

    first.run(work)
    assert len(attempts) == 2
    assert first.run(lambda tx: tx._db.rows(_S.counter, {"b_id": "sp-test"})[0][0]) == 101
    first.dispose()
    other.dispose()
