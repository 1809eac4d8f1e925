"""Every error leaves as JSON `{"detail": ...}` with the status the contract documents.

400 bad value (and a Host not served), 401 token, 403 origin or missing scope, 404 unknown thing,
408 body too slow, 409 conflict, 413 body over the cap, 422 invalid shape (names the field) or a body
that is not JSON (the original's status, which its clients expect), 429 busy / locked out, 503 store
unavailable.

The store's errors carry a kind (shared_store/errors.py); STATUS_OF_KIND below is the one place a kind
becomes an HTTP status, for every route: a route lets the store's error propagate, or, where it must
word the detail itself, asks `status_of(exc)`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from shared_store.errors import ErrorKind, StoreError

log = logging.getLogger("abstractgateway.api")

_encode = msgspec.json.encode

# kind -> HTTP status, for every route. lease_lost never reaches a client today (only runners write
# under a lease); were it to, the write lost a race with another writer: a conflict.
STATUS_OF_KIND: dict[ErrorKind, int] = {
    "not_found": 404,
    "conflict": 409,
    "invalid": 422,
    "bad_value": 400,
    "unavailable": 503,
    "lease_lost": 409,
}


def status_of(exc: StoreError) -> int:
    return STATUS_OF_KIND[exc.kind]


class ApiError(Exception):
    """Raised by handlers: becomes `{"detail": detail}` with this status."""

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


class BodyTooLarge(Exception):
    """The request body grew past the cap while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the {limit} byte limit")
        self.limit = limit


class BodyTimeout(Exception):
    """The request body did not arrive within the deadline."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"request body not received within {timeout_s:g} s")


def error_body(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encode({"detail": detail}), status, headers, media_type="application/json")


def not_found_run(run_id: str) -> ApiError:
    return ApiError(404, f"Run '{run_id}' not found")


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_body(exc.status, exc.detail, exc.headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_body(exc.status_code, exc.detail, exc.headers)


async def _too_large(_: Request, exc: Exception) -> Response:
    return error_body(413, str(exc), {"Connection": "close"})


async def _body_timeout(_: Request, exc: Exception) -> Response:
    return error_body(408, str(exc), {"Connection": "close"})


async def _store(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    status = status_of(exc)
    if exc.kind != "unavailable":  # the client's request: its message says what to change
        return error_body(status, str(exc))
    # Busy, unavailable, damaged: the client may retry; it is not the client's fault.
    log.warning("store error: %s", exc)
    return error_body(status, f"store unavailable: {exc}", {"Retry-After": "1"})


async def _internal(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_body(500, "internal error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    BodyTooLarge: _too_large,
    BodyTimeout: _body_timeout,
    StoreError: _store,
    Exception: _internal,
}
