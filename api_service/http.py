"""Routes that declare their body, query and response types, so validation and OpenAPI share one source.

An `ApiRoute` decodes the query string and JSON body with msgspec before the handler runs (400 for an
unknown query parameter, 422 for malformed JSON and, naming the field, for a wrong shape) and encodes what the
handler returns with msgspec (a Struct, a dict, or `msgspec.Raw` pieces spliced in as stored).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar, cast

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from shared_store.db import Database
from shared_store.reads import run_session

from .access import SCOPES, Principal, principal_of
from .errors import ApiError
from .read_pool import ReadPool
from .read_pool import pool as read_pool
from .writer import GroupWriter

T = TypeVar("T")
Handler = Callable[..., Awaitable[Any]]

_encode = msgspec.json.Encoder().encode


@functools.cache
def _decoder(kind: type) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


@functools.cache
def struct_fields(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f.encode_name for f in msgspec.structs.fields(kind))


@functools.cache
def _list_fields(kind: type[msgspec.Struct]) -> frozenset[str]:
    """Query fields typed as a list: the parameter may repeat (`?tag=a&tag=b`)."""
    return frozenset(f.encode_name for f in msgspec.structs.fields(kind) if typing.get_origin(f.type) is list)


def parse_query(request: Request, kind: type[T] | None) -> T | None:
    """The query string as `kind`; unknown names are a 400 that lists the known ones."""
    if kind is None and not request.scope.get("query_string"):
        return None  # most writes: no query and none expected (no QueryParams parse, no set work)
    params = request.query_params
    known = struct_fields(kind) if kind is not None else ()  # type: ignore[arg-type]
    # A query Struct may declare name prefixes it reads itself (`metadata.<key>`): QUERY_PREFIXES.
    prefixes = tuple(getattr(kind, "QUERY_PREFIXES", ()))
    unknown = sorted(k for k in set(params.keys()) - set(known) if not (prefixes and k.startswith(prefixes)))
    if unknown:
        takes = f"known: {', '.join(known)}" if known else "this route takes none"
        if prefixes:
            takes += f", and names starting {' or '.join(prefixes)}"
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)} ({takes})")
    if kind is None:
        return None
    repeatable = _list_fields(kind)  # type: ignore[arg-type]
    values = {
        name: params.getlist(name) if name in repeatable else params[name] for name in params if name in known
    }
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiError(422, f"invalid query: {exc}") from None


def decode_json(data: bytes, kind: type[T]) -> T:
    """A JSON body as `kind`: malformed JSON is 422 (as the original answers: its clients branch on it),
    a wrong shape 422 naming the field.

    msgspec reports invalid UTF-8 as UnicodeDecodeError and nesting past the recursion limit as
    RecursionError, not DecodeError: both are malformed input, never a 500."""
    try:
        return _decoder(cast(type, kind)).decode(data or b"{}")
    except msgspec.ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, f"malformed JSON body: {exc}") from None
    except RecursionError:
        raise ApiError(422, "malformed JSON body: nested too deeply") from None


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(value), status, headers, media_type="application/json")


# One thread per process does the API's writes, in group commits (writer.py): SQLite commits one
# writer at a time anyway, and threads of one process queueing on the write lock through the busy
# handler burn CPU (measured with 16 concurrent starts: ~1.1 ms of CPU per start with a thread pool,
# ~0.65 ms with one writer).
writer = GroupWriter()
# PostgreSQL commits many writers at once and groups their WAL flushes itself: there each write is
# its own transaction on one of a few threads (each store operation is one unit, run again whole on a
# deadlock). Measured for the design: 4 autocommit connections appended 3.2k/s, more than group
# commits of 64 with savepoints (2.0k/s), which also cost two round trips per write.
PG_WRITERS = 8
pg_writers = ReadPool(PG_WRITERS, name="api-write")


async def blocking(fn: Callable[..., T], db: Database, *args: Any, **kwargs: Any) -> T:
    """Run a store write (fn(db, ...)) off the event loop; returns once committed. SQLite: on the one
    writer thread, in group commits. PostgreSQL: on one of PG_WRITERS threads, one transaction each."""
    call = functools.partial(fn, db, *args, **kwargs)
    try:
        if db.backend == "postgresql":
            return await pg_writers.submit(call)
        return await writer.submit(db, call)
    finally:
        global writes_seen
        writes_seen += 1


# How many writes this process has made (counted on the event loop, committed or not): what a
# loop-side cache of store reads (health's) compares, so a client never reads past its own write.
writes_seen = 0


async def reading(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store read in a worker thread (read_pool): a slow read never stalls the event loop (and
    every stream and request on it)."""
    return await read_pool.submit(functools.partial(fn, *args, **kwargs))


# How a token restricted to one run or session may use a route:
#   "path"    the route's {run_id} must be that run (or a run of that session) — checked here;
#   "handler" the handler checks the run ids it is given (require_run);
#   "open"    the route shows nothing of any run (discovery, bundle reads);
#   "none"    restricted tokens are refused (lists, bundle writes, token minting).
Bound = Literal["path", "handler", "open", "none"]


async def require_run(request: Request, run_id: str | None) -> None:
    """403 unless the caller may touch `run_id` (always, for an unrestricted token)."""
    principal = principal_of(request.scope)
    if not principal.restricted:
        return
    if run_id is None:
        raise ApiError(403, f"this token is restricted to {principal.describe_restriction()}")
    if principal.run_id is not None:
        if run_id != principal.run_id:
            raise ApiError(403, f"this token is restricted to {principal.describe_restriction()}")
        return
    exists, session = await reading(run_session, request.app.state.gateway.db, run_id)
    if not exists or session != principal.session_id:
        raise ApiError(
            403,
            f"this token is restricted to {principal.describe_restriction()}; run '{run_id}' is not in it",
        )


def require_session(request: Request, session_id: str | None) -> None:
    """403 unless the caller may create runs in `session_id`: an unrestricted token anywhere, a
    session-restricted one in its own session only, a run-restricted one nowhere."""
    principal = principal_of(request.scope)
    if principal.restricted and (principal.session_id is None or session_id != principal.session_id):
        raise ApiError(403, f"this token is restricted to {principal.describe_restriction()}")


def require_input_size(request: Request, input_data: Any) -> None:
    """413 when a run's input_data, JSON-encoded, is over ABSTRACTGATEWAY_MAX_INPUT_BYTES."""
    cap = request.app.state.gateway.settings.max_input_bytes
    size = len(_encode(input_data))
    if size > cap:
        raise ApiError(
            413, f"input_data is {size} bytes encoded; the limit is {cap} (ABSTRACTGATEWAY_MAX_INPUT_BYTES)"
        )


def _has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or request.headers.get("content-length", "0") != "0"


class ApiRoute(Route):
    """A Starlette route plus what OpenAPI needs to describe it (and the wrapper enforces).

    `needs` is the scope a token must hold (read, run, admin); every /api/gateway route declares one
    (create_app refuses a route table where one does not). `bound`: see Bound."""

    def __init__(
        self,
        path: str,
        handler: Handler,
        *,
        methods: Sequence[str],
        summary: str,
        tags: Sequence[str],
        body: type | None = None,
        query: type | None = None,
        response: type | None = None,
        errors: Sequence[int] = (),
        multipart: type | None = None,
        stream: bool = False,
        events: dict[str, type] | None = None,
        accepted: type | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        needs: str | None = None,
        bound: Bound | None = None,
    ) -> None:
        if needs is not None and needs not in SCOPES:
            raise ValueError(f"{path}: unknown scope {needs!r} (one of {', '.join(SCOPES)})")
        self.needs = needs
        self.bound: Bound = bound or ("path" if "{run_id}" in path else "none")
        self.handler = handler
        self.body = body
        self.query = query
        self.response = response
        self.summary = summary
        self.tags = tuple(tags)
        self.errors = tuple(errors)
        self.multipart = multipart
        self.stream = stream
        self.events = dict(events or {})  # SSE event name -> the type of its JSON `data`
        self.accepted = accepted  # the 202 body of a route that may answer before its work is done
        self.content_type = content_type
        self.header_params = dict(headers or {})
        super().__init__(path, self._endpoint, methods=list(methods), name=handler.__name__)
        # Starlette's router tries the routes in order, each with get_route_path and its regex (~1.5 us
        # a route: a start tried 10 routes, a command 15). A path that does not start with the literal
        # part before the first parameter (or is not the whole path, for a route without one) cannot
        # match, and a startswith says so.
        self.literal = path.split("{", 1)[0]
        self.is_static = "{" not in path

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            if path != self.literal if self.is_static else not path.startswith(self.literal):
                return Match.NONE, {}
        return super().matches(scope)

    async def _authorize(self, request: Request) -> None:
        if self.needs is None:
            return  # an open route (health); create_app refuses a gateway route without a scope
        principal: Principal = principal_of(request.scope)
        if self.needs not in principal.scopes:
            raise ApiError(
                403,
                f"this token lacks the '{self.needs}' scope ({request.method} {self.path} needs it)",
            )
        if not principal.restricted or self.bound in ("open", "handler"):
            return
        if self.bound == "path":
            await require_run(request, request.path_params.get("run_id"))
            return
        raise ApiError(
            403, f"this token is restricted to {principal.describe_restriction()} and cannot use this route"
        )

    async def _endpoint(self, request: Request) -> Response:
        kwargs: dict[str, Any] = {}
        try:
            await self._authorize(request)
            query = parse_query(request, self.query)
        except ApiError as exc:
            # Refused before the body was read: h11 cannot reuse a connection with a request body
            # left unread, so say so instead of letting the client reuse it and see a disconnect.
            if _has_body(request):
                exc.headers.setdefault("Connection", "close")
            raise
        if self.query is not None:
            kwargs["query"] = query
        if self.body is not None:
            kwargs["body"] = decode_json(await request.body(), self.body)
        result = await self.handler(request, **kwargs)
        # A Response or another ASGI app (an SSE stream) goes out as is; data is encoded as JSON.
        return result if callable(result) else json_response(result)

    @property
    def description(self) -> str:
        return (self.handler.__doc__ or "").strip()
