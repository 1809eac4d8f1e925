"""Every error leaves as JSON `{"detail": ...}` with the status the contract documents.

400 bad value (and a Host not served), 401 token, 403 origin or missing scope, 404 unknown thing,
408 body too slow, 409 conflict, 413 body over the cap, 422 invalid shape (names the field) or a body
that is not JSON (the original's status, which its clients expect), 429 busy / locked out, 503 store
unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from shared_store.bulk_ops import BulkConflict
from shared_store.bundle_files import BundleError
from shared_store.errors import StoreError
from shared_store.flow_control import FlowControlError
from shared_store.reruns import RerunRefused, UnknownRun
from shared_store.run_filter import FilterInvalid
from shared_store.schedules import ScheduleInvalid
from shared_store.starts import IdempotencyConflict
from shared_store.webhooks import StillPending

log = logging.getLogger("abstractgateway.api")

_encode = msgspec.json.encode


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


async def _classified(_: Request, exc: Exception) -> Response:
    # The store's client-facing errors carry their status (UnknownBundle 404, BundleExists 409, ...).
    return error_body(int(getattr(exc, "status", 400)), getattr(exc, "detail", None) or str(exc))


async def _schedule_invalid(_: Request, exc: Exception) -> Response:
    return error_body(422, str(exc))


async def _store(_: Request, exc: Exception) -> Response:
    # Busy, unavailable, damaged: the client may retry; a store error is never the client's fault.
    log.warning("store error: %s", exc)
    return error_body(503, f"store unavailable: {exc}", {"Retry-After": "1"})


async def _internal(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_body(500, "internal error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    BodyTooLarge: _too_large,
    BodyTimeout: _body_timeout,
    BundleError: _classified,
    IdempotencyConflict: _classified,
    FilterInvalid: _classified,
    BulkConflict: _classified,
    RerunRefused: _classified,
    UnknownRun: _classified,
    StillPending: _classified,
    FlowControlError: _classified,
    ScheduleInvalid: _schedule_invalid,
    StoreError: _store,
    Exception: _internal,
}
