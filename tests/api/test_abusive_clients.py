"""The issue's connection and request exploits replayed over a real Hypercorn: each abusive client is
refused or cut off while a normal client beside it is still served.

Clients on 127.0.0.2 / 127.0.0.3 (the whole 127/8 is loopback on Linux) are other addresses to the
server: per-client caps and lockouts key on them, exactly as on a network."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from shared_store.backend import describe

from .conftest import TOKEN, Gateway, make_gateway, start_runner, stop_process

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client_at(gw: Gateway, address: str, **headers: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=gw.url, headers={**AUTH, **headers}, transport=transport, timeout=30)


@contextmanager
def trickling(gw: Gateway, address: str, path: str = "/api/gateway/runs/start") -> Iterator[socket.socket]:
    """A raw connection from `address` that sent a request's headers and one byte of a 100-byte body."""
    sock = socket.create_connection(("127.0.0.1", gw.server.port), source_address=(address, 0), timeout=30)
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        yield sock
    finally:
        sock.close()


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- slow bodies and per-client slots --------------------------------------------------------------------
def test_trickled_bodies_get_408_and_cannot_take_every_slot(tmp_path: Path, flows: Path) -> None:
    """300 bodies trickling a byte every 5 s once held all 256 slots: now one client holds at most its
    share, gets 429 beyond it, and 408 (connection closed) when its bodies miss the deadline — while
    a normal client is served throughout."""
    with (
        make_gateway(tmp_path, flows, max_concurrency=8, max_client_concurrency=3, body_timeout_s=2.0) as gw,
        ExitStack() as stack,
    ):
        slow = [stack.enter_context(trickling(gw, "127.0.0.2")) for _ in range(3)]
        with client_at(gw, "127.0.0.2") as abuser, client_at(gw, "127.0.0.1") as normal:
            # The abuser's slots are full: its next request is refused, naming why ...
            busy = None
            for _ in range(200):  # the three requests reach the app asynchronously
                busy = abuser.get("/api/gateway/bundles")
                if busy.status_code == 429:
                    break
                time.sleep(0.02)
            assert busy is not None and busy.status_code == 429, busy.text if busy else None
            assert "from this client" in busy.json()["detail"]
            # ... while the normal client is served.
            assert normal.get("/api/gateway/bundles").status_code == 200
            assert normal.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).status_code == 200
        before = gw.counts()
        for sock in slow:  # the deadline passes: 408 and the connection is closed by the server
            reply = read_reply(sock)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b"not received within 2 s" in reply
        assert gw.counts() == before
        with client_at(gw, "127.0.0.2") as abuser:  # its slots are free again
            assert abuser.get("/api/gateway/bundles").status_code == 200


def test_slow_headers_are_cut_off_by_the_header_deadline(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, header_timeout_s=1.0) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.server.port), timeout=30)
        sock.sendall(b"GET /api/gateway/bundles HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sent = 0
        try:
            for _ in range(50):  # one header line every 0.2 s: never a complete request
                time.sleep(0.2)
                sock.sendall(b"X-Slow: 1\r\n")
                sent += 1
        except OSError:
            pass  # closed by the server
        assert sent < 50, "a request whose headers never end was kept open"
        with httpx.Client(base_url=gw.url, headers=AUTH) as normal:
            assert normal.get("/api/gateway/bundles").status_code == 200
        sock.close()


# --- SSE ---------------------------------------------------------------------------------------------------
def test_stream_caps_per_client_and_per_token(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, max_streams_per_client=2, max_streams_per_token=3) as gw:
        run_id = gw.start("bench-echo")  # no runner: the run stays queued and its streams stay open
        url = f"/api/gateway/runs/{run_id}/ledger/stream"
        with ExitStack() as stack:
            abuser = stack.enter_context(client_at(gw, "127.0.0.2"))
            for _ in range(2):
                assert stack.enter_context(abuser.stream("GET", url)).status_code == 200
            third = abuser.get(url)
            assert third.status_code == 429 and "from this client (max 2)" in third.json()["detail"]
            normal = stack.enter_context(client_at(gw, "127.0.0.1"))
            assert stack.enter_context(normal.stream("GET", url)).status_code == 200  # 3rd with TOKEN
            other = stack.enter_context(client_at(gw, "127.0.0.3"))
            fourth = other.get(url)
            assert fourth.status_code == 429 and "with this token (max 3)" in fourth.json()["detail"]
            minted = gw.client.post("/api/gateway/tokens", json={"scopes": ["read"]}).json()["token"]
            # The same address with another token: not capped by the first token's streams.
            own = stack.enter_context(other.stream("GET", url, headers={"Authorization": f"Bearer {minted}"}))
            assert own.status_code == 200
        # Closed streams give their quota back.
        with client_at(gw, "127.0.0.2") as again, again.stream("GET", url) as stream:
            assert stream.status_code == 200


def test_heartbeat_below_the_floor_is_raised_to_it(tmp_path: Path, flows: Path) -> None:
    """heartbeat_s=0.05 on 2,000 streams once took the API to 100% CPU: the floor makes a stream
    asking for 0.05 s get the floor's pace (here 0.5 s: a 1.6 s read sees ~3 keepalives, not ~30)."""
    with make_gateway(tmp_path, flows, min_heartbeat_s=0.5) as gw:
        run_id = gw.start("bench-echo")
        comments = 0
        with gw.client.stream(
            "GET", f"/api/gateway/runs/{run_id}/ledger/stream", params={"heartbeat_s": 0.05}
        ) as stream:
            assert stream.status_code == 200
            started = time.monotonic()
            for line in stream.iter_lines():
                comments += line.startswith(":")
                if time.monotonic() - started > 1.6:
                    break
        assert 1 <= comments <= 6, comments


# --- inputs and batches -----------------------------------------------------------------------------------
def test_oversized_input_data_is_413_and_stores_nothing(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, max_input_bytes=2_000) as gw:
        before = gw.counts()
        big = {"bundle_id": "bench-echo", "input_data": {"blob": "x" * 5_000}}
        start = gw.client.post("/api/gateway/runs/start", json=big)
        assert start.status_code == 413 and "ABSTRACTGATEWAY_MAX_INPUT_BYTES" in start.json()["detail"]
        schedule = gw.client.post("/api/gateway/runs/schedule", json={**big, "interval": "1h"})
        assert schedule.status_code == 413
        assert gw.counts() == before
        ok = gw.client.post(
            "/api/gateway/runs/start", json={"bundle_id": "bench-echo", "input_data": {"x": 1}}
        )
        assert ok.status_code == 200


def test_ledger_batch_is_bounded_and_pages_on(tmp_path: Path, flows: Path) -> None:
    """One batch answer once carried 524 MB: now it stops at the record budget (all runs together)
    and each run's next_after resumes where it stopped, so everything still arrives."""
    cap = 7
    with make_gateway(tmp_path, flows, max_batch_records=cap) as gw:
        runner = start_runner(gw.db_path, flows)
        try:
            run_ids = [gw.start("bench-echo", {"message": f"m{i}"}) for i in range(4)]
            for run_id in run_ids:
                gw.wait_for(run_id, lambda v: v["status"] == "completed")
        finally:
            stop_process(runner)
        total = {r: len(gw.client.get(f"/api/gateway/runs/{r}/ledger").json()["items"]) for r in run_ids}
        assert sum(total.values()) > cap
        cursors = dict.fromkeys(run_ids, 0)
        seen = dict.fromkeys(run_ids, 0)
        for _ in range(sum(total.values())):
            body = {"limit": 1000, "runs": [{"run_id": r, "after": cursors[r]} for r in run_ids]}
            answer = gw.client.post("/api/gateway/runs/ledger/batch", json=body).json()["runs"]
            assert sum(len(page["items"]) for page in answer.values()) <= cap
            for r, page in answer.items():
                assert page["next_after"] == cursors[r] + len(page["items"])
                seen[r] += len(page["items"])
                cursors[r] = page["next_after"]
            if seen == total:
                break
        assert seen == total  # everything arrives, a bounded answer at a time


# --- lockout and forwarded addresses ---------------------------------------------------------------------
def test_lockout_counts_per_client_and_honours_forwarded_for_from_trusted_proxies_only(
    tmp_path: Path, flows: Path
) -> None:
    with make_gateway(
        tmp_path, flows, lockout_after=3, lockout_s=120.0, trusted_proxies=("127.0.0.1",)
    ) as gw:
        bad = {"Authorization": "Bearer wrong-token"}
        with client_at(gw, "127.0.0.1") as proxy:
            # Behind the trusted proxy, the forwarded client is the one locked out ...
            for _ in range(3):
                proxy.get("/api/gateway/runs", headers={**bad, "X-Forwarded-For": "203.0.113.9"})
            locked = proxy.get("/api/gateway/runs", headers={**bad, "X-Forwarded-For": "203.0.113.9"})
            assert locked.status_code == 429
            # ... not the proxy's other clients, and never a valid token.
            elsewhere = proxy.get(
                "/api/gateway/runs",
                headers={"Authorization": "Bearer other", "X-Forwarded-For": "203.0.113.7"},
            )
            assert elsewhere.status_code == 401
            assert (
                proxy.get("/api/gateway/runs", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
            )
        with client_at(gw, "127.0.0.2") as spoofer:
            # From an untrusted peer the header is ignored: a new X-Forwarded-For per try does not
            # dodge the lockout.
            codes = [
                spoofer.get(
                    "/api/gateway/runs",
                    headers={"Authorization": f"Bearer w{i}", "X-Forwarded-For": f"10.0.0.{i}"},
                ).status_code
                for i in range(5)
            ]
            assert codes == [401, 401, 401, 429, 429]


def test_one_wrong_token_from_many_addresses_is_locked_by_fingerprint(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, lockout_after=3) as gw:
        codes = []
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            with client_at(gw, address, Authorization="Bearer stale-token") as client:
                codes.append(client.get("/api/gateway/runs").status_code)
        assert codes == [401, 401, 401, 429]
        with client_at(gw, "127.0.0.5") as client:
            assert client.get("/api/gateway/runs").status_code == 200  # its valid token is served


# --- hosts, origins, health ------------------------------------------------------------------------------
def test_dns_rebinding_is_refused_without_auth(tmp_path: Path, flows: Path) -> None:
    """With --insecure-local-no-auth a foreign Host with a matching Origin (a rebinding page) once
    uploaded and ran a bundle: now only loopback names are served."""
    with make_gateway(tmp_path, flows, tokens=()) as gw:
        before = gw.counts()
        with httpx.Client(base_url=gw.url, timeout=30) as browser:
            rebound = {
                "Host": f"evil.example:{gw.server.port}",
                "Origin": f"http://evil.example:{gw.server.port}",
            }
            for method, path, body in (
                ("POST", "/api/gateway/runs/start", {"bundle_id": "bench-echo"}),
                ("POST", "/api/gateway/bundles/bench-echo/deprecate", {}),
                ("GET", "/api/gateway/runs", None),
                ("GET", "/api/health", None),
            ):
                refused = browser.request(method, path, json=body, headers=rebound)
                assert refused.status_code == 400 and "loopback" in refused.json()["detail"], path
            assert gw.counts() == before
            for host in (f"localhost:{gw.server.port}", f"127.0.0.1:{gw.server.port}"):
                ok = browser.post(
                    "/api/gateway/runs/start", json={"bundle_id": "bench-echo"}, headers={"Host": host}
                )
                assert ok.status_code == 200, host


def test_allowed_hosts_with_auth(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, allowed_hosts=("gw.example", "*.gw.example")) as gw:
        assert gw.client.get("/api/gateway/runs", headers={"Host": "other.example"}).status_code == 400
        assert gw.client.get("/api/gateway/runs", headers={"Host": "gw.example:443"}).status_code == 200
        assert gw.client.get("/api/gateway/runs", headers={"Host": "a.gw.example"}).status_code == 200


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),
        ("http://localhost:3000.evil.com", False),
        ("http://localhost.evil.com:3000", False),
        ("http://localhost:3000@evil.com", False),
        ("https://localhost:3000", False),
        ("http://ui.allowed.test", True),
        ("http://ui.allowed.test.evil.com", False),
    ],
)
def test_origin_globs_match_host_and_port_parts_only(gateway: Gateway, origin: str, allowed: bool) -> None:
    response = gateway.client.get("/api/gateway/bundles", headers={"Origin": origin})
    assert response.status_code == (200 if allowed else 403), origin


def test_health_detail_is_for_token_holders(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as anon:
        brief = anon.get("/api/health")
        wrong = anon.get("/api/health", headers={"Authorization": "Bearer nope"})
    assert brief.status_code == 200 and set(brief.json()) == {"status", "service"}
    assert str(gateway.db_path) not in brief.text and set(wrong.json()) == {"status", "service"}
    detail = gateway.client.get("/api/health").json()
    assert detail["db"]["path"] == describe(gateway.db) and "runners" in detail


# --- artifacts ---------------------------------------------------------------------------------------------
def test_active_artifacts_are_attachments_and_never_sniffed(lone_gateway: Gateway) -> None:
    from shared_store.artifact_store import SqliteArtifactStore

    gw = lone_gateway
    run_id = gw.start("bench-echo")
    store = SqliteArtifactStore(gw.db, gw.db_path.parent / "artifacts")
    for content_type, active in (
        ("text/html", True),
        ("image/svg+xml", True),
        ("application/javascript", True),
        ("application/xml", True),
        ("text/plain", False),
        ("image/png", False),
    ):
        meta = store.store(b"<script>alert(1)</script>", content_type=content_type, run_id=run_id)
        served = gw.client.get(f"/api/gateway/runs/{run_id}/artifacts/{meta.artifact_id}/content")
        assert served.status_code == 200 and served.content == b"<script>alert(1)</script>"
        assert served.headers["x-content-type-options"] == "nosniff"
        disposition = served.headers.get("content-disposition", "")
        assert disposition.startswith("attachment") == active, (content_type, disposition)


def test_settings_refuse_a_bad_proxy_or_a_short_secret(tmp_path: Path) -> None:
    from api_service.access import load_secret
    from api_service.settings import ApiSettings, SettingsError

    with pytest.raises(SettingsError, match="TRUSTED_PROXIES: 'nope'"):
        ApiSettings.from_env({"ABSTRACTGATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,nope"})
    assert ApiSettings.from_env({"ABSTRACTGATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, ::1"}).trusted_proxies == (
        "10.0.0.0/8",
        "::1",
    )
    with pytest.raises(ValueError, match="at least 32"):
        load_secret(tmp_path, {"ABSTRACTGATEWAY_TOKEN_SECRET": "short"})
    made = load_secret(tmp_path, {})
    assert len(made) == 64 and load_secret(tmp_path, {}) == made
    assert [p.name for p in tmp_path.iterdir()] == ["token_secret"]  # no temporary file left
