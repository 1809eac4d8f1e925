"""Security middleware over a real server: tokens, origins, CORS preflight, lockout, caps, audit log."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_service.http import ApiRoute
from api_service.middleware.auth import token_fingerprint

from .conftest import ALLOWED_ORIGIN, TOKEN, Gateway, make_gateway

EVIL = "http://evil.example"


def gateway_calls(gateway: Gateway) -> Iterator[tuple[str, str]]:
    """(method, path) of every /api/gateway route in the app's route table, path params filled in."""
    for route in gateway.server.app.routes:
        if isinstance(route, ApiRoute) and route.path.startswith("/api/gateway"):
            for method in sorted(route.methods - {"HEAD"}):
                yield method, re.sub(r"\{[^}]+\}", "x", route.path)


def test_route_table_is_walked(gateway: Gateway) -> None:
    calls = list(gateway_calls(gateway))
    assert len(calls) >= 18 and ("POST", "/api/gateway/runs/start") in calls


def test_every_gateway_route_needs_a_token_and_an_allowed_origin(lone_gateway: Gateway) -> None:
    gateway = lone_gateway  # no runner: the row counts move only if a refused request wrote
    with httpx.Client(base_url=gateway.url, timeout=30) as anon:
        _walk(gateway, anon)


def _walk(gateway: Gateway, anon: httpx.Client) -> None:
    before = gateway.counts()
    for method, path in gateway_calls(gateway):
        missing = anon.request(method, path, json={})
        assert missing.status_code == 401, (method, path, missing.text)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "detail" in missing.json()
        wrong = anon.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, (method, path)
        foreign = gateway.client.request(method, path, json={}, headers={"Origin": EVIL})
        assert foreign.status_code == 403, (method, path, foreign.text)
        assert "access-control-allow-origin" not in foreign.headers
        preflight = anon.options(path, headers={"Origin": EVIL, "Access-Control-Request-Method": method})
        assert preflight.status_code == 403, (method, path)
    assert gateway.counts() == before


def test_unknown_gateway_paths_are_401_not_404(anon: httpx.Client) -> None:
    assert anon.get("/api/gateway/no/such/thing").status_code == 401


def test_allowed_origin_gets_cors_headers_and_preflight(gateway: Gateway, anon: httpx.Client) -> None:
    ok = gateway.client.get("/api/gateway/bundles", headers={"Origin": ALLOWED_ORIGIN})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "Origin" in ok.headers["vary"]
    globbed = gateway.client.get("/api/gateway/bundles", headers={"Origin": "http://localhost:5173"})
    assert globbed.status_code == 200
    preflight = anon.options(
        "/api/gateway/runs/start",
        headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    # Same origin as the server (the Swagger UI page) is allowed whatever the list says.
    same = gateway.client.get("/api/gateway/bundles", headers={"Origin": gateway.url})
    assert same.status_code == 200


def test_open_routes_need_no_token(gateway: Gateway, anon: httpx.Client) -> None:
    health = anon.get("/api/health")
    assert health.status_code == 200 and health.json()["service"] == "abstractgateway"
    assert anon.get("/openapi.json").status_code == 200
    docs = anon.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "swagger" in docs.text.lower()


def test_lockout_after_repeated_bad_tokens(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, lockout_after=3, lockout_s=120.0) as gw:
        bad = {"Authorization": "Bearer wrong"}
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            assert [client.get("/api/gateway/runs", headers=bad).status_code for _ in range(3)] == [401] * 3
            locked = client.get("/api/gateway/runs", headers=bad)
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
            # Other wrong tokens from the locked client are refused too (counted per client) ...
            assert (
                client.get("/api/gateway/runs", headers={"Authorization": "Bearer other"}).status_code == 429
            )
        # ... but a valid token from the same address is always served: one bad client behind a
        # shared proxy address must not lock everyone else out.
        assert gw.client.get("/api/gateway/runs").status_code == 200
        assert gw.client.get("/api/health").status_code == 200, "open routes stay open"


def test_missing_tokens_do_not_lock_out(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, lockout_after=2) as gw, httpx.Client(base_url=gw.url) as client:
        assert {client.get("/api/gateway/runs").status_code for _ in range(5)} == {401}
        assert gw.client.get("/api/gateway/runs").status_code == 200


def test_concurrency_cap_answers_429(tmp_path: Path, flows: Path) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b'{"bundle_id": "bench-echo", '
        started.set()
        release.wait(30)
        yield b'"input_data": {}}'

    with make_gateway(tmp_path, flows, max_concurrency=1) as gw:
        results: list[int] = []
        holder = threading.Thread(
            target=lambda: results.append(
                gw.client.post("/api/gateway/runs/start", content=slow_body()).status_code
            )
        )
        holder.start()
        started.wait(30)
        busy = httpx.get(f"{gw.url}/api/gateway/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        release.set()
        holder.join(30)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert results == [200]
        assert gw.client.get("/api/gateway/runs").status_code == 200


def test_streamed_body_over_the_cap_is_413(tmp_path: Path, flows: Path) -> None:
    def chunked() -> Iterator[bytes]:  # no Content-Length: the count happens while reading
        yield b'{"bundle_id": "bench-echo", "input_data": {"x": "'
        for _ in range(8):
            yield b"a" * 512
        yield b'"}}'

    with make_gateway(tmp_path, flows, max_body_bytes=2048) as gw:
        before = gw.counts()
        response = gw.client.post("/api/gateway/runs/start", content=chunked())
        assert response.status_code == 413 and "limit" in response.json()["detail"]
        assert gw.counts() == before
        small = gw.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"})
        assert small.status_code == 200


def test_audit_log_records_writes_without_the_token(gateway: Gateway, anon: httpx.Client) -> None:
    run_id = gateway.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).json()["run_id"]
    anon.post(
        "/api/gateway/runs/start", json={"bundle_id": "bench-echo"}, headers={"Authorization": "Bearer x"}
    )
    gateway.client.get("/api/gateway/runs")  # a read: not audited
    audit = Path(gateway.settings.audit_log).read_text()  # type: ignore[arg-type]
    assert TOKEN not in audit
    entries = [json.loads(line) for line in audit.splitlines()]
    assert all(e["method"] != "GET" for e in entries)
    started = next(e for e in entries if e["ids"].get("run_id") == run_id)
    assert started["status"] == 200 and started["path"] == "/api/gateway/runs/start"
    assert started["token"] == token_fingerprint(TOKEN) and started["client_ip"] == "127.0.0.1"
    assert started["ts"].endswith("+00:00")
    refused = [e for e in entries if e["status"] == 401]
    assert refused and refused[-1]["token"] == token_fingerprint("x")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "bearer x y", TOKEN])
def test_malformed_authorization_headers_are_401(anon: httpx.Client, header: str) -> None:
    response = anon.get("/api/gateway/runs", headers={"Authorization": header})
    assert response.status_code == 401
