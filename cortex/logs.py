"""structlog set-up: JSON lines (or console) carrying process role, shard and pid."""

import logging
import os
import sys
from typing import Any

import structlog


def configure(role: str, *, json: bool = True, level: str = "info", **context: Any) -> None:
    """Configure structlog for this process; call once, in the process that logs."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role, pid=os.getpid(), **context)


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
