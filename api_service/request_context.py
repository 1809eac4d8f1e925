"""The id of the request being served: set by the observe middleware, read by handlers (to store it
with the start or command the request appended) and by every log line (structlog contextvars)."""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

import structlog

# A client may bring its own id (a proxy's, a trace's): kept when it is short and plain, so it can
# never inject anything into a log line or a header.
_SANE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id(offered: str | None) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    if offered and _SANE.match(offered):
        return offered
    # 128 random bits as 32 hex digits, as uuid4().hex gave, at a quarter of its cost (~1 us vs ~4 us).
    return os.urandom(16).hex()


def bind_request_id(request_id: str) -> None:
    request_id_var.set(request_id)
    structlog.contextvars.bind_contextvars(request_id=request_id)


def current_request_id() -> str | None:
    return request_id_var.get()
