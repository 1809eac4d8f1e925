"""The one logging set-up of both processes (`serve`, the runner it supervises, `runner`).

structlog loggers and stdlib loggers (hypercorn, starlette, abstractruntime, ours) end in one stdlib
handler on stderr whose structlog ProcessorFormatter renders every line the same way: JSON with
`event`, `level`, `timestamp`, `logger` (and the bound `request_id` / `run_id`) when stderr is not a
terminal, readable lines when it is. Python warnings and uncaught exceptions (main or a thread) go
through it too, so a journal or a log shipper reads one format.

Cost: a structlog call below the level returns at once (filtering bound logger); nothing is logged per
request (hypercorn's access log stays off: server.py).
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import Processor

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _NamedWriter(structlog.WriteLogger):
    """structlog's line writer with the name get_logger gave it (the `logger` field)."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name

    @classmethod
    def named(cls, *args: Any) -> _NamedWriter:
        return cls(str(args[0]) if args else "abstractgateway")


def _renderer() -> Processor:
    if sys.stderr.isatty():
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer()


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for every logger of this process, at `level` (debug | info | warning | error)."""
    numeric = LEVELS.get(level.lower(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,  # request_id (API middleware), run_id (runner)
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = _renderer()
    # structlog's own loggers write their line directly, not through stdlib logging: a LogRecord and
    # the formatter tripled the cost of a line (~110 -> ~320 us on a shared 2-core box; the API logs each
    # request). Both paths share the processors, so the lines are alike.
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedWriter.named,
        cache_logger_on_first_use=True,
    )
    # One write per line (StreamHandler, like structlog's WriteLogger, writes line + newline at once):
    # processes sharing a stderr file (serve and its runner) never interleave within a line.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("hypercorn.error", "hypercorn.access", "uvicorn", "starlette"):
        # Their own handlers (hypercorn adds one to stderr) would print each line a second, plain time.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
    _log_uncaught()


def _log_uncaught() -> None:
    log = logging.getLogger("abstractgateway.uncaught")

    def main_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        log.critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_hook(args: Any) -> None:
        if args.exc_type is SystemExit:
            return
        log.error(
            "uncaught exception in thread %s",
            getattr(args.thread, "name", "?"),
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
