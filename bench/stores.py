"""Where the measured hubs keep their state.

By default each hub run gets a fresh SQLite file (the embedded default, what the goals of
issue #9 are measured on). With `--store postgresql://user@host:port/db` each run gets a
fresh database on that PostgreSQL server (the production store), created from a
connection to the given database and dropped at the end of the bench; the server's CPU
is counted where its processes run on this host (psutil sees them), so that a figure
per referral includes the store's share of the machine."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class StoreError(Exception):
    """The store the bench was given cannot be used (said before anything runs)."""


def _dbapi_url(server: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL (driver name dropped)."""
    return make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)


class Stores:
    def __init__(self, work: Path, run_id: str, server: str | None = None) -> None:
        self.work = work
        self.run_id = run_id
        self.server = server
        self._created: dict[str, str] = {}
        if server is not None:
            try:
                url = make_url(server)
            except ArgumentError:
                raise StoreError(f"--store: not a database URL: {server!r}") from None
            if url.get_backend_name() != "postgresql":
                raise StoreError(
                    "--store takes a PostgreSQL URL (postgresql://user@host:port/database); "
                    "without it every run gets a fresh SQLite file"
                )
            self._check()

    @property
    def kind(self) -> str:
        if self.server is None:
            return "SQLite (a fresh file per run)"
        url = make_url(self.server)
        return (
            f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432} (a fresh database per run)"
        )

    @property
    def shown_url(self) -> str | None:
        """The `--store` URL as the report shows it (no password)."""
        if self.server is None:
            return None
        return make_url(self.server).render_as_string(hide_password=True)

    def _connect(self):  # type: ignore[no-untyped-def]
        import psycopg

        assert self.server is not None
        return psycopg.connect(_dbapi_url(self.server), autocommit=True, connect_timeout=10)

    def _check(self) -> None:
        import psycopg

        try:
            with self._connect() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"--store: PostgreSQL does not answer: {first}") from None

    def url(self, name: str) -> str:
        """The store of the run called `name` (e.g. "throughput"): created on first use."""
        if self.server is None:
            return f"sqlite:///{self.work / (name + '.db')}"
        if name not in self._created:
            database = f"schakel_bench_{self.run_id}_{name.replace('-', '_')}"
            with self._connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
                conn.execute(f'CREATE DATABASE "{database}"')
            self._created[name] = (
                make_url(self.server).set(database=database).render_as_string(hide_password=False)
            )
        return self._created[name]

    def server_cpu(self) -> float | None:
        """CPU seconds of the PostgreSQL server's processes on this host so far (None with
        SQLite, or when the server runs elsewhere)."""
        if self.server is None:
            return None
        import psutil

        total, seen = 0.0, False
        for proc in psutil.process_iter(["name"]):
            if (proc.info.get("name") or "").startswith("postgres"):
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
                seen = True
        return total if seen else None

    def drop_all(self) -> None:
        """Drop every database this bench created (its hubs are stopped by then)."""
        if not self._created:
            return
        with self._connect() as conn:
            for url in self._created.values():
                database = make_url(url).database
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self._created.clear()
