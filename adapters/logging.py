"""structlog, configured once: JSON lines (or a console renderer on a terminal), with a
redaction step that every line passes, stdlib loggers (FastStream, aiokafka, Alembic)
included.

Redaction works on values, after exceptions are formatted: values under personal keys are
masked outright; every other text value has BSNs and remembered personal strings masked
(`adapters.redaction`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from adapters.redaction import PERSONAL_MASK, redact

PERSONAL_KEYS = frozenset(
    {
        "bsn",
        "name",
        "patient",
        "client",
        "address",
        "phone",
        "email",
        "birth_date",
        "birthdate",
        "body",
    }
)
LogFormat = Literal["auto", "json", "console"]


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: PERSONAL_MASK if k in PERSONAL_KEYS else _redact_value(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [_redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(repr(value) if not isinstance(value, Exception) else str(value))


# Written by the logging itself (add_timestamp, add_log_level, add_logger_name), never input.
_OWN_KEYS = frozenset({"timestamp", "level", "logger"})


def redact_event(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if key in PERSONAL_KEYS:
            event_dict[key] = PERSONAL_MASK
        elif key not in _OWN_KEYS and not key.startswith("_"):
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


_SECOND: tuple[int, str] = (-1, "")
"""The last whole second `iso_utc` formatted, and its text."""


def iso_utc(ns: int) -> str:
    """`ns` (nanoseconds since the epoch) as structlog's `TimeStamper(fmt="iso", utc=True)`
    writes the moment (`datetime.now(UTC).isoformat()` with "Z" for "+00:00": microseconds,
    truncated as `datetime.now` does, left out at a whole second), with the date and time
    to the second formatted once a second. `isoformat` on an aware datetime was most of
    what structlog's stamp cost: 20,400 instructions a line under cachegrind, this 7,700."""
    global _SECOND
    second, micro = divmod(ns // 1000, 1_000_000)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{micro:06d}Z" if micro else f"{cached[1]}Z"


def add_timestamp(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """The `timestamp` field, as structlog's `TimeStamper(fmt="iso", utc=True)` (`iso_utc`)."""
    event_dict["timestamp"] = iso_utc(time.time_ns())
    return event_dict


def format_exc_info(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """structlog's `format_exc_info`, asked only where a line has `exc_info` (it takes no
    other key; a line without one it returns as it is)."""
    if "exc_info" not in event_dict:
        return event_dict
    return structlog.processors.format_exc_info(logger, name, event_dict)


def _orjson_dumps(data: Any, **_kw: Any) -> str:
    return orjson.dumps(data, default=str).decode()


class _Line:
    """The end of the hub's own log calls: the rendered line, written to the stream of the
    handler that stdlib records (FastStream, aiokafka, Alembic) go through, under that
    handler's lock, so the two kinds never interleave. Going through stdlib logging (two
    LogRecords and a formatter per line) cost three times as much per line, and the hub
    writes several lines per referral."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, line: str) -> None:
        handler = _HANDLER
        if handler is None:
            return
        with handler.lock:  # type: ignore[union-attr]
            try:
                handler.stream.write(line + "\n")
                handler.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: as stdlib, not fatal
                pass

    debug = info = warning = warn = error = critical = exception = fatal = msg


_HANDLER: logging.StreamHandler[TextIO] | None = None
_GENERATION = 0
"""How many times logging was configured: a logger of `get_logger` binds anew after each."""


def _line_factory(*args: Any) -> _Line:
    return _Line(str(args[0]) if args else "")


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Idempotent: calling it again replaces the configuration."""
    global _HANDLER, _GENERATION
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_timestamp,
        format_exc_info,
        redact_event,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    handler = logging.StreamHandler(stream)
    # The hub's own loggers: structlog's processors straight to the handler's stream.
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=_line_factory,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,
    )
    # Everything else logs through stdlib logging: the same processors, in a formatter.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared[:-2],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_schakel", False):
            root.removeHandler(old)
    handler._schakel = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    _HANDLER = handler
    _GENERATION += 1
    adopt_library_loggers()
    # Per-message chatter of the Kafka client stays out of INFO.
    for chatty in ("aiokafka", "alembic"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def adopt_library_loggers() -> None:
    """Libraries that bring their own handlers (FastStream does, when it is imported) would
    write past the redaction: take those handlers away and let the records reach ours.
    `configure_logging` does it, and the hub again once it has imported FastStream (which
    may happen after the logging was set up)."""
    for name in list(logging.root.manager.loggerDict):
        other = logging.getLogger(name)
        if other.handlers and not name.startswith("schakel"):
            for old in list(other.handlers):
                other.removeHandler(old)
            other.propagate = True
            other.setLevel(logging.NOTSET)


class _Logger:
    """A structlog logger named `name` (the `logger` field of its lines), bound once per
    configuration. structlog's own lazy proxy binds a new logger at every call (its
    cache would keep the first configuration for good, and `configure_logging` may be
    called again): about 1 µs of the 13–15 µs of one of the hub's log lines, timed here."""

    __slots__ = ("_bound", "_generation", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._bound: Any = None
        self._generation = -1

    def __getattr__(self, method: str) -> Any:
        if self._generation != _GENERATION:  # -1 until the first call
            self._bound = structlog.get_logger(self._name).bind()
            self._generation = _GENERATION
        return getattr(self._bound, method)


def get_logger(name: str) -> Any:
    """A structlog logger named `name` (the `logger` field of its lines)."""
    return _Logger(name)
