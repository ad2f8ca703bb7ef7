"""The outbox relay's lock on PostgreSQL (a session advisory lock): one holder, freed when its
session ends, and a session the server gives up on within seconds once its client falls
silent (a vanished host never closes its connection)."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from adapters.storage.store import RELAY_LOCK_SESSION, Store


def test_one_holder_whose_session_the_server_ends_after_seconds_of_silence(
    postgres_url: str,
) -> None:
    store = Store(postgres_url)
    store.migrate()
    holder, other = store.relay_lock(), store.relay_lock()
    assert holder.acquire() and holder.acquire(), "taken, and still held"
    assert not other.acquire()

    conn = holder._conn
    assert conn is not None
    shown = {
        name: conn.execute(text(f"SELECT current_setting('{name}')")).scalar_one()
        for name, _ in RELAY_LOCK_SESSION
    }
    # the server's side of the holder's connection (over a Unix socket these read 0): idle
    # 10 s, then three probes 5 s apart; unacknowledged data given up after 30 s
    assert shown == {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

    # what the server does when the probes go unanswered: the session ends, the lock with it
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    assert other.acquire(), "the next instance takes over"
    assert not holder.acquire(), "the old holder finds it lost the lock"
    store.dispose()
