"""OpenAPI 3.1 generated from the route table and the msgspec Structs (nothing hand-written to drift),
and the Swagger UI page at /docs (bearer "Authorize" button), its assets served from the installed
swagger-ui-py package so the page works on a host with no internet."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .http import ApiRoute
from .middleware import PROTECTED
from .schemas import ErrorResponse

REF = "#/components/schemas/{name}"
ERRORS = {
    400: "Bad value (unknown query parameter, ...)",
    401: "Missing or invalid bearer token",
    403: "Origin not allowed",
    404: "Unknown id",
    409: "Conflict",
    413: "Body over the size cap",
    422: "Invalid shape (the detail names the field), or a body that is not JSON",
    429: "Too many concurrent requests, or locked out after bad tokens (see Retry-After)",
    503: "Store unavailable",
}
SWAGGER_UI = "/docs/assets"  # served by this API (swagger_ui_assets()), never a CDN


def _types(routes: list[ApiRoute]) -> list[type]:
    found: dict[type, None] = {ErrorResponse: None}
    for route in routes:
        kinds = (
            route.body,
            route.query,
            route.response,
            route.multipart,
            route.accepted,
            *route.events.values(),
        )
        for kind in kinds:
            if kind is not None:
                found[kind] = None
    return list(found)


def _sse_event_schema(route: ApiRoute, refs: dict[type, Any]) -> dict[str, Any]:
    """One SSE event: its `id` (a cursor), its name, and `data` as JSON of that event's type."""
    if not route.events:
        return {"type": "object", "properties": {"data": {"type": "string"}}}
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"const": name},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": refs[kind],
                    },
                },
            }
            for name, kind in route.events.items()
        ]
    }


def _operation(
    route: ApiRoute, method: str, refs: dict[type, Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    secured = route.path.startswith(PROTECTED)
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    if route.query is not None:
        query = schemas[route.query.__name__]
        required = set(query.get("required", []))
        params += [
            {"name": name, "in": "query", "required": name in required, "schema": schema}
            for name, schema in query["properties"].items()
        ]
    params += [
        {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in route.header_params.items()
    ]
    op: dict[str, Any] = {
        "operationId": f"{route.name}_{method.lower()}",
        "summary": route.summary,
        "description": route.description,
        "tags": list(route.tags),
        "parameters": params,
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": refs[route.body]}}}
    if route.multipart is not None:
        form = dict(schemas[route.multipart.__name__])
        form["properties"] = {
            **form["properties"],
            "file": {"type": "string", "format": "binary"},
        }
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": form}}}
    if route.stream:
        ok = {
            "description": "Server-sent events (the schema describes one event)",
            "content": {"text/event-stream": {"schema": _sse_event_schema(route, refs)}},
        }
    elif route.response is not None:
        ok = {"description": "OK", "content": {"application/json": {"schema": refs[route.response]}}}
    else:
        ok = {"description": "OK", "content": {route.content_type or "application/octet-stream": {}}}
    codes = set(route.errors) | {400, 503}
    if route.body is not None or route.query is not None:
        codes.add(422)
    if secured:
        codes |= {401, 403, 429}
    error = {"application/json": {"schema": refs[ErrorResponse]}}
    accepted = (
        {
            "202": {
                "description": "Accepted: not finished yet",
                "content": {"application/json": {"schema": refs[route.accepted]}},
            }
        }
        if route.accepted is not None
        else {}
    )
    op["responses"] = {
        "200": ok,
        **accepted,
        **{str(code): {"description": ERRORS[code], "content": error} for code in sorted(codes)},
    }
    op["security"] = [{"bearerAuth": []}] if secured else []
    return op


def openapi_spec(routes: Iterable[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI document of every ApiRoute in `routes`."""
    api_routes = [route for route in routes if isinstance(route, ApiRoute)]
    types = _types(api_routes)
    ref_list, schemas = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(types, ref_list, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in api_routes:
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                paths.setdefault(route.path, {})[method.lower()] = _operation(route, method, refs, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Durable HTTP control plane for abstractruntime workflow runs. "
            'Errors are JSON `{"detail": ...}`.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


DOCS_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AbstractGateway API</title>
<link rel="stylesheet" href="{SWAGGER_UI}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{SWAGGER_UI}/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui",
persistAuthorization: true}});</script>
</body></html>"""


def swagger_ui_assets() -> Path:
    """swagger-ui-py's copy of Swagger UI 5 (OpenAPI 3.1), found without importing the package (which
    would pull in its framework handlers)."""
    found = importlib.util.find_spec("swagger_ui")
    locations = list(found.submodule_search_locations or []) if found else []
    static = [Path(location) / "static" for location in locations]
    for folder in static:
        if (folder / "swagger-ui-bundle.js").is_file():
            return folder
    raise RuntimeError("swagger-ui-py is not installed: /docs needs its Swagger UI assets")


def doc_routes(build: Callable[[], bytes]) -> list[BaseRoute]:
    """/openapi.json and /docs: open, no token needed. The document is built and encoded at its first
    request, then kept: a serve nobody asks for it never holds it (~0.4 MB of its idle RSS)."""
    spec = functools.cache(build)

    async def openapi_json(_: Request) -> Response:
        return Response(spec(), media_type="application/json")

    async def docs(_: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    return [
        Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False),
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
        Mount("/docs/assets", app=StaticFiles(directory=swagger_ui_assets()), name="swagger-ui"),
    ]
