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


def redact_event(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if key in PERSONAL_KEYS:
            event_dict[key] = PERSONAL_MASK
        elif not key.startswith("_"):
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _orjson_dumps(data: Any, **_kw: Any) -> str:
    return orjson.dumps(data, default=str).decode()


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Idempotent: calling it again replaces the configuration."""
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_event,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared[:-2],
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared[:-2],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_schakel", False):
            root.removeHandler(old)
    handler._schakel = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Per-message chatter of the Kafka client stays out of INFO.
    # Libraries that bring their own handlers (FastStream does, at import) would write past
    # the redaction: take those handlers away and let the records reach ours.
    for name in list(logging.root.manager.loggerDict):
        other = logging.getLogger(name)
        if other.handlers and not name.startswith("schakel"):
            for old in list(other.handlers):
                other.removeHandler(old)
            other.propagate = True
            other.setLevel(logging.NOTSET)
    for chatty in ("aiokafka", "alembic"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
