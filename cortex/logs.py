"""structlog set-up: JSON lines (or console) carrying process role, shard and pid."""

import logging
import os
import sys
from typing import Any

import structlog

_LEVELS = logging.getLevelNamesMapping()
_min_level = [logging.INFO]  # a list: set_level changes it for every logger at once


def _drop_below_level(_logger: Any, method: str, event: Any) -> Any:
    # The level is checked here rather than by structlog's filtering wrapper, which is
    # fixed when a logger is first used: a reload (SIGHUP) must be able to change it.
    if _LEVELS.get(method.upper(), logging.ERROR) < _min_level[0]:  # "exception": ERROR
        raise structlog.DropEvent
    return event


class _LineWriter:
    """One ``write(2)`` per log line: the hub's processes share one stderr, and
    ``print`` (two writes: the text, then the newline) let their lines interleave
    into invalid JSON (``…}{…``). A pipe keeps a write of up to PIPE_BUF (4 KiB)
    whole; a file opened O_APPEND (systemd's journal, ``>>``) any write."""

    def msg(self, message: str) -> None:
        data = (message + "\n").encode()
        while data:
            data = data[os.write(2, data):]

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def wants_json(log_format: str) -> bool:
    """``auto``: JSON lines unless stderr is a terminal (then structlog's console view)."""
    if log_format == "auto":
        return not sys.stderr.isatty()
    return log_format == "json"


def set_level(level: str) -> None:
    """Change this process's log level (a reload)."""
    _min_level[0] = _LEVELS[level.upper()]


def configure(role: str, *, json: bool = True, level: str = "info", **context: Any) -> None:
    """Configure structlog for this process; call once, in the process that logs."""
    set_level(level)
    processors: list[Any] = [
        _drop_below_level,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=lambda *_args: _LineWriter(),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role, pid=os.getpid(), **context)


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
