"""The id of the request being served: set by the observe middleware, read by handlers (to store it
with the start or command the request appended) and by every log line (structlog contextvars)."""

from __future__ import annotations

import itertools
import os
import re
from contextvars import ContextVar

from shared_store.logs import bind_fields

# A client may bring its own id (a proxy's, a trace's): kept when it is short and plain, so it can
# never inject anything into a log line or a header.
_SANE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

_PREFIX = ""
_COUNTER = itertools.count()


def _reseed() -> None:  # at import, and in a forked child (a `serve --workers` process): its own prefix
    global _PREFIX, _COUNTER
    _PREFIX = os.urandom(8).hex()
    _COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


_reseed()
os.register_at_fork(after_in_child=_reseed)
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id(offered: str | None) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    if offered and _SANE.match(offered):
        return offered
    # 32 hex digits: this process's 64 random bits, then a counter. Unique without a getrandom(2) per
    # request (os.urandom(16) took ~10 us of a start under load here); an id names, it guards nothing.
    return f"{_PREFIX}{next(_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def bind_request_id(request_id: str) -> None:
    request_id_var.set(request_id)
    bind_fields(request_id=request_id)


def current_request_id() -> str | None:
    return request_id_var.get()
