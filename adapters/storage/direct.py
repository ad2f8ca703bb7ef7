"""Built statements run on the DBAPI cursor of a SQLAlchemy connection.

Executing a built statement through SQLAlchemy costs more Python per call (execution
context, parameter construction, result wrapping) than SQLite needs for the statement
itself: with about ten statements per referral, running them here took the in-process
pipeline from 1.57 to 0.88 ms CPU per referral. The hub's hot statements are compiled
once per dialect and parameter set, with SQLAlchemy's own type processors (the same
conversions, e.g. UtcDateTime, as every other statement), and run on the cursor of the
connection's transaction.

An expanding parameter (`bindparam(..., expanding=True)`, an `IN` list) is rendered with
one placeholder per value, as SQLAlchemy renders it, for lists padded to the next power of
two with their last value (the same rows): a few texts per statement, each prepared once
by the driver's statement cache, instead of one per list length.

On PostgreSQL a transaction's statements are pipelined (`pipelined`, psycopg's pipeline
mode): a write is sent without waiting for its answer, and the answers come back with the
next statement that needs one (a read, a write whose row count is asked for, the end of
the transaction). A transaction of three consents took about 30 round trips to the server,
each a wait with the event loop held; now about one per read. An error of a write surfaces
at that next statement, inside the same transaction, which then fails as a whole (as it
did when the write itself raised: nothing catches a store error per statement).

DBAPI errors are raised as SQLAlchemy's `DBAPIError` subclasses, as SQLAlchemy raises
them, so retries and outage handling see no difference (the store's engines leave the
parameters, personal data, out of their text); a lost connection is invalidated so that the pool does not
hand it out again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import BindParameter

Processor = Callable[[Any], Any]
_REQUIRED: Any = object()
PIPELINE = "schakel_pipeline"
"""Key in `Connection.info` of the psycopg pipeline a transaction runs in (see `pipelined`)."""
_NO_ANSWER_NEEDED = ("SET ", "SAVEPOINT ", "RELEASE SAVEPOINT ")


@contextlib.contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """The statements inside run in psycopg's pipeline mode (PostgreSQL; elsewhere as they
    are). Before it ends, every answer is read, so a write's error is raised inside, as
    SQLAlchemy's `DBAPIError` (see `Direct.sync`)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    direct = Direct(conn)
    try:
        with raw.pipeline() as pipeline:  # type: ignore[attr-defined]
            conn.info[PIPELINE] = pipeline
            try:
                yield
                direct.sync()
            except BaseException:
                # Leave the pipeline quietly: a sync ends its aborted state (else leaving
                # logs "error ignored terminating"), and the transaction rolls back anyway.
                with contextlib.suppress(Exception):
                    pipeline.sync()
                raise
            finally:
                conn.info.pop(PIPELINE, None)
    except conn.dialect.loaded_dbapi.Error as exc:  # from leaving the pipeline itself
        raise direct._fail(exc, "(end of pipeline)", None) from exc


def answers_now(conn: Connection, cursor: Any, statement: str, *_args: Any) -> None:
    """SQLAlchemy's `after_cursor_execute` on PostgreSQL engines: inside `pipelined`, a
    statement run through SQLAlchemy gets its answer at once (SQLAlchemy reads the
    cursor's description and row count right after executing), except those that answer
    nothing anyone reads."""
    pipeline = conn.info.get(PIPELINE)
    if pipeline is not None and not statement.startswith(_NO_ANSWER_NEEDED):
        pipeline.sync()


class Compiled:
    """One statement for one dialect and one set of parameter names."""

    __slots__ = (
        "sql",
        "_binds",
        "_positional",
        "_results",
        "_raw_rows",
        "_expanding",
        "_paramstyle",
        "_texts",
    )

    def __init__(self, statement: Any, dialect: Dialect, keys: Sequence[str] | None) -> None:
        compiled = statement.compile(
            dialect=dialect,
            column_keys=list(keys) if keys is not None else None,
            for_executemany=True,  # no RETURNING added for an insert's primary key
        )
        self.sql: str = compiled.string
        self._positional: bool = compiled.positional
        escaped = getattr(compiled, "escaped_bind_names", None) or {}
        by_name: dict[str, BindParameter[Any]] = {
            name: bind for bind, name in compiled.bind_names.items()
        }
        order = compiled.positiontup if compiled.positional else list(by_name)
        binds: list[tuple[str, str, Any, Processor | None]] = []
        expanding: list[bool] = []
        for name in order or ():
            bind = by_name[name]
            default = _REQUIRED if bind.required else bind.effective_value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((escaped.get(name, name), bind.key, default, processor))
            expanding.append(bool(bind.expanding))
        self._binds = tuple(binds)
        self._expanding = tuple(expanding) if any(expanding) else None
        self._paramstyle: str = dialect.paramstyle
        if self._expanding is not None and self._paramstyle not in ("qmark", "pyformat"):
            raise NotImplementedError(f"IN lists with paramstyle {self._paramstyle}")
        self._texts: dict[tuple[int, ...], str] = {}
        columns = getattr(statement, "selected_columns", None)
        self._results: tuple[Processor | None, ...] = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in (columns or ())
        )
        self._raw_rows = not any(self._results)  # nothing to convert: rows as the driver gives

    def expanded(self, values: Mapping[str, Any]) -> tuple[str, Any]:
        """(SQL text, parameters) for a statement with IN lists: a placeholder per value."""
        assert self._expanding is not None
        values = dict(values)
        padded: list[int] = []
        for (_n, key, _d, _p), e in zip(self._binds, self._expanding, strict=True):
            if e:
                items = list(values[key])
                if not items:
                    raise ValueError("an empty IN list")  # SQLAlchemy renders another expression
                n = 1 << (len(items) - 1).bit_length()
                values[key] = items + items[-1:] * (n - len(items))
                padded.append(n)
        lengths = tuple(padded)
        sql = self._texts.get(lengths)
        if sql is None:
            sql = self.sql
            ns = iter(lengths)
            for (name, _key, _d, _p), e in zip(self._binds, self._expanding, strict=True):
                if e:
                    n = next(ns)
                    marks = (
                        ["?"] * n
                        if self._paramstyle == "qmark"
                        else [f"%({name}_{i})s" for i in range(1, n + 1)]
                    )
                    sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join(marks))
            self._texts[lengths] = sql
        positional: list[Any] = []
        named: dict[str, Any] = {}
        for (name, key, default, processor), e in zip(self._binds, self._expanding, strict=True):
            value = values[key] if default is _REQUIRED else values.get(key, default)
            items = value if e else (value,)
            if processor is not None:
                items = [processor(v) for v in items]
            if self._positional:
                positional.extend(items)
            elif e:
                named.update((f"{name}_{i}", v) for i, v in enumerate(items, 1))
            else:
                named[name] = items[0]
        return sql, (tuple(positional) if self._positional else named)

    def parameters(self, values: Mapping[str, Any]) -> Any:
        if self._expanding is not None:
            raise TypeError("a statement with an IN list is run by `Direct.rows`")
        out = []
        for _name, key, default, processor in self._binds:
            value = values[key] if default is _REQUIRED else values.get(key, default)
            out.append(value if processor is None else processor(value))
        if self._positional:
            return tuple(out)
        return {b[0]: v for b, v in zip(self._binds, out, strict=True)}

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        if self._raw_rows:
            return tuple(raw)
        return tuple(
            v if p is None or v is None else p(v) for p, v in zip(self._results, raw, strict=True)
        )


class Direct:
    """Runs built statements on the cursor of `conn` (one transaction)."""

    # keyed by the statement itself: the hub's are built once (module constants)
    _cache: dict[tuple[str, Any, tuple[str, ...] | None], Compiled] = {}

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self._cursor: Any = None

    def _compiled(self, statement: Any, keys: tuple[str, ...] | None) -> Compiled:
        key = (self.dialect.name, statement, keys)
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._cache[key] = Compiled(statement, self.dialect, keys)
        return compiled

    def _cursor_of(self) -> Any:
        if self._cursor is None:
            self._cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        return self._cursor

    def _fail(self, exc: Exception, sql: str, params: Any) -> DBAPIError:
        dbapi = self.dialect.loaded_dbapi
        try:
            raw = self.conn.connection.dbapi_connection
            lost = self.dialect.is_disconnect(exc, raw, self._cursor)
        except Exception:  # noqa: BLE001 - the connection is unusable: treat it as lost
            lost = True
        if lost:
            self._cursor = None
            if not self.conn.invalidated:
                self.conn.invalidate(exc)
        return DBAPIError.instance(
            sql,
            params,
            exc,
            dbapi.Error,
            hide_parameters=self.conn.engine.hide_parameters,  # as the engine's own errors
            connection_invalidated=lost,
        )

    def rows(self, statement: Executable, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a select (processed as SQLAlchemy would)."""
        compiled = self._compiled(statement, None)
        if compiled._expanding is None:
            sql, params = compiled.sql, compiled.parameters(values)
        else:
            sql, params = compiled.expanded(values)
        cursor = self._cursor_of()
        try:
            cursor.execute(sql, params)
            raw = cursor.fetchall()
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._fail(exc, sql, params) from exc
        return [compiled.row(r) for r in raw]

    def execute(self, statement: Executable, values: Mapping[str, Any]) -> int:
        """An insert, update or delete; the number of rows it matched (in a pipeline: read
        now, with the answers of everything sent before it)."""
        return self._run(statement, values, answer=True)

    def write(self, statement: Executable, values: Mapping[str, Any]) -> None:
        """An insert, update or delete whose row count nobody reads: in a pipeline, sent
        without waiting for its answer."""
        self._run(statement, values, answer=False)

    def _run(self, statement: Executable, values: Mapping[str, Any], *, answer: bool) -> int:
        compiled = self._compiled(statement, tuple(values))
        params = compiled.parameters(values)
        cursor = self._cursor_of()
        pipeline = self.conn.info.get(PIPELINE) if answer else None
        try:
            cursor.execute(compiled.sql, params)
            if pipeline is not None:
                pipeline.sync()
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._fail(exc, compiled.sql, params) from exc
        return int(cursor.rowcount)

    def sync(self) -> None:
        """In a pipeline: every answer read now (a write's error raised here)."""
        pipeline = self.conn.info.get(PIPELINE)
        if pipeline is None:
            return
        try:
            pipeline.sync()
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._fail(exc, "(pipeline sync)", None) from exc

    def execute_many(self, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        """One statement for many rows (all with the keys of the first). A single row is
        an `execute`: psycopg's `executemany` enters and leaves pipeline mode around it,
        which costs about as much again as the statement (85 vs 44 µs CPU here)."""
        if not rows:
            return
        compiled = self._compiled(statement, tuple(rows[0]))
        params = [compiled.parameters(r) for r in rows]
        cursor = self._cursor_of()
        try:
            if len(params) == 1:
                cursor.execute(compiled.sql, params[0])
            else:
                cursor.executemany(compiled.sql, params)
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._fail(exc, compiled.sql, params) from exc
