"""structlog setup: JSON lines (or console), request context bound via contextvars."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_stream: TextIO | None = None

REQUEST_ID: ContextVar[str] = ContextVar("gateway_request_id", default="")
"""The id of the request being served: set once per request by the transport (one
contextvar write, nothing else per request), added to every log line written while it
is served by `add_request_id`."""


def add_request_id(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current request's id, when there is one."""
    rid = REQUEST_ID.get()
    if rid:
        event.setdefault("request_id", rid)
    return event


def configure_logging(level: str = "info", fmt: str = "json", file: Path | None = None) -> None:
    """Configure structlog process-wide: ISO UTC timestamps, level, bound contextvars."""
    global _stream
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        _stream = file.open("a", buffering=1)
    else:
        _stream = sys.stdout
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(_stream),
        cache_logger_on_first_use=False,
    )


def flush_logs() -> None:
    """Flush the log stream (called on shutdown)."""
    if _stream is not None:
        _stream.flush()
