"""Logging of every GOLD process: lines of text for a terminal (the default) or one JSON object a line
(GOLD_LOG_FORMAT=json) for a log pipeline. A record logged inside `log_context(...)` carries its
fields (the run driver binds run_id, iteration and stage around each step), in JSON as keys."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# A context variable, not a thread-local: it follows a step into the threads its service calls run
# in when they are submitted with contextvars.copy_context().run.
_fields: ContextVar[dict[str, Any]] = ContextVar("gold_log_fields")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every record logged inside (in this thread or context) carries these fields."""
    token = _fields.set({**_fields.get({}), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


class ContextFilter(logging.Filter):
    """Copies the fields of log_context onto each record (a handler's filter: it sees the records
    of every logger, which a filter on the root logger would not)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _fields.get({}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def make_handler(log_format: LogFormat = "text") -> logging.Handler:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if log_format == "json":
        # timestamp: an ISO 8601 UTC "timestamp" key; extra record attributes (run_id, ...) become keys.
        handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp=True))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    logging.basicConfig(level=level.upper(), handlers=[make_handler(log_format)])


def uvicorn_log_config(log_format: LogFormat) -> dict[str, Any] | None:
    """uvicorn's `log_config`: its own text handlers, or none for JSON, so that its records (access
    lines included) reach the root handler and come out as JSON like the service's own."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
