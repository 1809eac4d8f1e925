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
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import msgspec
import structlog
from structlog.typing import Processor

from .codec import utc_now_iso

# The fields a line takes from where it is logged (request_id: the API request or the runner's work
# for it; run_id: the run a runner works on), each a ContextVar of its own read by one processor.
# structlog's merge_contextvars scanned every variable of the context for its prefix: ~8.6 us a line
# in the API, whose requests carry starlette's and anyio's variables too; this reads two.
_UNSET: Any = object()
_FIELDS: dict[str, ContextVar[Any]] = {
    "request_id": ContextVar("log_request_id", default=_UNSET),
    "run_id": ContextVar("log_run_id", default=_UNSET),
}


def bind_fields(**fields: Any) -> None:
    """Set context fields for every later line of this context (the request's task, a thread)."""
    for name, value in fields.items():
        _FIELDS[name].set(value)


@contextmanager
def bound_fields(**fields: Any) -> Iterator[None]:
    """Context fields for the lines logged inside the block."""
    tokens = [(_FIELDS[name], _FIELDS[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def merge_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, var in _FIELDS.items():
        value = var.get()
        if value is not _UNSET:
            event.setdefault(name, value)
    return event


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
    return structlog.processors.JSONRenderer(serializer=_json)


_encoder = msgspec.json.Encoder(enc_hook=repr)


def _json(event: dict[str, Any], **_: object) -> str:
    """msgspec instead of json.dumps (as default=repr, enc_hook=repr): the API logs a line per write
    request, and json.dumps was the largest share of that line's cost."""
    return _encoder.encode(event).decode()


# Where a HotLine writes (stderr's descriptor) and from which level, once configure_logging chose JSON
# lines; None: it hands its lines to structlog (a terminal's readable lines, or not configured).
_hot: tuple[int, int] | None = None


class HotLine:
    """One event of a hot path (the API's line per write request), as structlog renders it here
    (the same keys, in the same order) but built and written directly, one os.write per line.

    structlog's way there (a bound logger's context copy, five processors, a TextIOWrapper write and
    flush) cost ~64,000 instructions a line (callgrind, in-process starts): ~15% of a start's CPU."""

    def __init__(self, logger_name: str) -> None:
        self.name = logger_name
        self.fallback = structlog.get_logger(logger_name)

    def enabled(self, level: int) -> bool:
        """Whether a line at `level` would be written (False only on the direct path, below its level;
        structlog's way decides for itself)."""
        hot = _hot
        return hot is None or level >= hot[1]

    def __call__(self, level: int, event: str, **fields: Any) -> None:
        hot = _hot
        if hot is None:
            self.fallback.log(level, event, **fields)
            return
        fd, threshold = hot
        if level < threshold:
            return
        fields["event"] = event
        merge_fields(None, "", fields)
        fields["logger"] = self.name
        fields["level"] = logging.getLevelName(level).lower()
        fields["timestamp"] = utc_now_iso()[:-6] + "Z"
        with suppress(OSError):  # stderr gone (a closed pipe): a lost line, never a failed request
            os.write(fd, _encoder.encode(fields) + b"\n")


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for every logger of this process, at `level` (debug | info | warning | error)."""
    global _hot
    numeric = LEVELS.get(level.lower(), logging.INFO)
    shared: list[Processor] = [
        merge_fields,  # request_id (API middleware, runner), run_id (runner)
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = _renderer()
    try:
        _hot = None if sys.stderr.isatty() else (sys.stderr.fileno(), numeric)
    except (AttributeError, OSError, ValueError):  # a stand-in stderr (a test's capture): structlog's way
        _hot = None
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
