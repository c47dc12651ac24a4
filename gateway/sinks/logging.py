"""structlog setup: JSON lines (or console), request context bound via contextvars."""

from __future__ import annotations

import logging
import sys
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
"""The id of the request being served (also bound into structlog's context); reading it
is cheaper than copying structlog's whole context."""


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
