"""The OpenAPI document is generated from the route table: every route, its schemas, bearer auth."""

from __future__ import annotations

import re

import httpx

from api_service.http import ApiRoute

from .conftest import Gateway


def test_spec_covers_every_api_route_with_schemas(gateway: Gateway, anon: httpx.Client) -> None:
    spec = anon.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    routes = [r for r in gateway.server.app.routes if isinstance(r, ApiRoute)]
    assert routes
    for route in routes:
        for method in route.methods - {"HEAD"}:
            op = spec["paths"][route.path][method.lower()]
            assert op["summary"] and op["responses"]["200"]
            if route.path.startswith("/api/gateway"):
                assert op["security"] == [{"bearerAuth": []}] and "401" in op["responses"]
            else:
                assert op["security"] == []
    start = spec["paths"]["/api/gateway/runs/start"]["post"]
    body = start["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "input_data" in spec["components"]["schemas"][body]["properties"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in start["parameters"])
    listing = spec["paths"]["/api/gateway/runs"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "limit", "offset", "status", "workflow_id", "session_id", "parent_run_id", "cursor", "tag",
        "created_after", "created_before", "ended_after", "ended_before", "q",
    }  # fmt: skip
    ledger = spec["paths"]["/api/gateway/runs/{run_id}/ledger"]["get"]
    assert {p["name"] for p in ledger["parameters"]} == {"run_id", "after", "limit"}
    after = next(p for p in ledger["parameters"] if p["name"] == "after")
    assert after["schema"]["minimum"] == 0
    stream = spec["paths"]["/api/gateway/runs/{run_id}/ledger/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    upload = spec["paths"]["/api/gateway/bundles/upload"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"


def test_docs_page_points_at_the_spec(anon: httpx.Client) -> None:
    page = anon.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'url: "/openapi.json"' in page.text and "SwaggerUIBundle" in page.text


def test_docs_works_offline_its_assets_come_from_this_server(anon: httpx.Client) -> None:
    """Every script and stylesheet /docs loads is served by the API itself (no CDN: a host without
    internet still gets a working page)."""
    page = anon.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets, page
    for asset in assets:
        assert asset.startswith("/"), f"{asset} would be fetched from another host"
        response = anon.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset
    bundle = anon.get("/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"] and b"SwaggerUIBundle" in bundle.content
    assert anon.get("/docs/assets/nope.js").status_code == 404
