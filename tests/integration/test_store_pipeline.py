"""Transactions on PostgreSQL run in psycopg's pipeline mode (`adapters.storage.direct`):
writes are sent without waiting for their answers. What must not change: reads see the
transaction's writes, row counts asked for are right, a write's error fails the
transaction as SQLAlchemy's error (retries and outage handling see no difference), nothing
of a failed transaction is kept, and the connection is fine for the next one."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from adapters.storage import tables as t
from adapters.storage.direct import PIPELINE
from adapters.storage.store import Store, Tx

INSERT = insert(t.counters)
BUMP = update(t.counters).where(t.counters.c.name == "a").values(value=t.counters.c.value + 1)


@pytest.fixture
def store(postgres_url: str) -> Store:
    store = Store(postgres_url)
    store.migrate()
    return store


def _values(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {r.name: r.value for r in conn.execute(select(t.counters))}


@pytest.mark.parametrize("quick", [False, True])
def test_writes_are_pipelined_and_read_back_in_the_transaction(store: Store, quick: bool) -> None:
    def work(tx: Tx) -> tuple[object, list[str], list[tuple[object, ...]], int, int]:
        raw = tx.conn.connection.dbapi_connection
        pipelined = tx.conn.info.get(PIPELINE) is not None and raw.pgconn.pipeline_status != 0
        tx._db.write(INSERT, {"name": "a", "value": 1})
        tx._db.write(INSERT, {"name": "b", "value": 2})
        through_sqlalchemy = [r.name for r in tx.conn.execute(select(t.counters.c.name))]
        on_the_cursor = tx._db.rows(select(t.counters.c.name, t.counters.c.value), {})
        matched = tx._db.execute(BUMP, {})
        none = tx._db.execute(
            update(t.counters).where(t.counters.c.name == "x").values(value=0), {}
        )
        return pipelined, sorted(through_sqlalchemy), sorted(on_the_cursor), matched, none

    pipelined, names, rows, matched, none = store.run(work, quick=quick)
    assert pipelined is True
    assert names == ["a", "b"]
    assert rows == [("a", 1), ("b", 2)]
    assert (matched, none) == (1, 0)
    assert _values(store) == {"a": 2, "b": 2}
    with store.engine.connect() as conn:  # the pipeline is left with the transaction
        assert PIPELINE not in conn.info
        assert conn.connection.dbapi_connection.pgconn.pipeline_status == 0


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("then_read", [False, True])
def test_a_write_that_fails_fails_the_transaction_as_sqlalchemys_error(
    store: Store, quick: bool, then_read: bool
) -> None:
    store.run(lambda tx: tx._db.write(INSERT, {"name": "a", "value": 1}))

    def work(tx: Tx) -> None:
        tx._db.write(INSERT, {"name": "b", "value": 2})
        tx._db.write(INSERT, {"name": "a", "value": 9})  # duplicate key: answered later
        if then_read:  # the error surfaces at the read; else at the end of the transaction
            tx._db.rows(select(t.counters.c.name), {})

    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    psycopg_log = logging.getLogger("psycopg")
    psycopg_log.addHandler(handler)
    try:
        with pytest.raises(IntegrityError) as raised:
            store.run(work, quick=quick)
    finally:
        psycopg_log.removeHandler(handler)
    assert isinstance(raised.value, DBAPIError)
    assert said == []  # the pipeline was left quietly
    assert _values(store) == {"a": 1}  # "b" went with the transaction
    store.run(lambda tx: tx._db.write(INSERT, {"name": "c", "value": 3}), quick=quick)
    assert _values(store) == {"a": 1, "c": 3}  # the connection serves the next one


def test_an_error_outside_the_store_rolls_back_what_was_sent(store: Store) -> None:
    class Bug(Exception):
        pass

    def work(tx: Tx) -> None:
        tx._db.write(INSERT, {"name": "a", "value": 1})
        raise Bug

    with pytest.raises(Bug):
        store.run(work, quick=True)
    assert _values(store) == {}
    store.run(lambda tx: tx._db.write(INSERT, {"name": "a", "value": 5}), quick=True)
    assert _values(store) == {"a": 5}


def test_savepoints_in_a_pipeline_keep_and_undo_their_writes(store: Store) -> None:
    class Refused(Exception):
        pass

    refused: list[Refused] = []

    def work(tx: Tx) -> None:
        with tx.savepoint():
            tx._db.write(INSERT, {"name": "kept", "value": 1})
        try:
            with tx.savepoint():
                tx._db.write(INSERT, {"name": "undone", "value": 2})
                raise Refused
        except Refused as exc:
            refused.append(exc)

    store.run(work)
    assert len(refused) == 1
    assert _values(store) == {"kept": 1}
