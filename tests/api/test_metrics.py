"""/metrics after a known workload on `serve --workers 2` (two API processes on one port, one
runner): whichever worker answers a scrape, the counts are the whole deployment's. Also the request
id: returned as X-Request-ID and carried into the runner's log lines for the work it caused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import free_port

TOKEN = "metrics-token-" + "z" * 24
STARTS = 5  # bench-echo runs
ASKS = 2  # bench-ask runs, each answered by one resume command


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape on a fresh connection (so the kernel may hand it to either worker)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (n, lbls), value in samples.items()
        if n == name and all((k, v) in lbls for k, v in labels.items())
    )


@contextmanager
def serving(tmp: Path, flows: Path, *extra: str) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`serve` (with its runner) as a process of its own, until its runner is seen."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_DATA_DIR=str(tmp), ABSTRACTGATEWAY_LOG_LEVEL="debug"
    )
    args = [sys.executable, "-m", "abstractgateway", "serve", "--migrate", *extra]
    args += ["--port", str(port), "--flows-dir", str(flows)]
    log = tmp / "serve.log"
    with log.open("ab") as out:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1_500):  # the API and the runner up: health sees the runner
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                auth = {"Authorization": f"Bearer {TOKEN}"}  # health's detail is for token holders
                health = httpx.get(f"{url}/api/health", headers=auth, timeout=5).json()
                if health["runners"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        yield url, log, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[tuple[str, Path, Path]]:
    tmp = tmp_path_factory.mktemp("metrics")
    with serving(tmp, flows, "--workers", "2") as (url, log, _):
        yield url, log, tmp


def test_metrics_count_a_known_workload_across_two_workers(served: tuple[str, Path, Path]) -> None:
    url, log, _ = served
    before = scrape(url)
    run_ids: list[str] = []
    asks: list[str] = []
    for i in range(STARTS + ASKS):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            bundle = "bench-echo" if i < STARTS else "bench-ask"
            body = {"bundle_id": bundle, "input_data": {"message": f"m{i}"}}
            response = client.post(
                "/api/gateway/runs/start", json=body, headers={"X-Request-ID": f"req-start-{i}"}
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == f"req-start-{i}"
            (run_ids if i < STARTS else asks).append(response.json()["run_id"])
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        for run_id in asks:
            for _ in range(1_500):
                if client.get(f"/api/gateway/runs/{run_id}").json()["status"] == "waiting":
                    break
                time.sleep(0.02)
            body = {"command_id": f"answer-{run_id}", "run_id": run_id, "type": "resume"}
            body["payload"] = {"payload": {"response": "yes"}}
            first = client.post(
                "/api/gateway/commands", json=body, headers={"X-Request-ID": f"req-cmd-{run_id}"}
            )
            again = client.post("/api/gateway/commands", json=body)
            assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
        assert client.get("/api/gateway/runs/nope").status_code == 404
    # The runner publishes with its heartbeat (every <= 5 s): wait until its counts arrive.
    samples: dict = {}
    for _ in range(300):
        samples = scrape(url)
        if (
            total(samples, "abstractgateway_runner_commands_total", outcome="applied") >= ASKS
            and total(samples, "abstractgateway_run_duration_seconds_count") >= STARTS + ASKS
        ):
            break
        time.sleep(0.1)
    delta = {key: value - before.get(key, 0.0) for key, value in samples.items()}
    assert total(delta, "abstractgateway_runs_started_total") == STARTS + ASKS
    assert total(delta, "abstractgateway_commands_appended_total", type="resume", outcome="accepted") == ASKS
    assert total(delta, "abstractgateway_commands_appended_total", type="resume", outcome="duplicate") == ASKS
    route = "/api/gateway/runs/start"
    assert total(delta, "abstractgateway_http_requests_total", route=route, method="POST", status="200") == 7
    assert (
        total(delta, "abstractgateway_http_request_duration_seconds_count", route=route, method="POST") == 7
    )
    notfound = {"route": "/api/gateway/runs/{run_id}", "method": "GET", "status": "404"}
    assert total(delta, "abstractgateway_http_requests_total", **notfound) == 1
    # The runner's own metrics, exported by the API with its runner_id.
    assert total(samples, "abstractgateway_runner_commands_total", type="resume", outcome="applied") == ASKS
    assert total(samples, "abstractgateway_runner_runs_started_total") == STARTS + ASKS
    echo = {"outcome": "completed"}
    assert total(samples, "abstractgateway_run_duration_seconds_count", **echo) == STARTS + ASKS
    assert total(samples, "abstractgateway_runner_lease_claims_total") >= STARTS + 2 * ASKS
    assert total(samples, "abstractgateway_runner_tick_duration_seconds_count") >= STARTS + ASKS
    assert all(
        dict(labels).get("runner_id")
        for name, labels in samples
        if name.startswith("abstractgateway_runner_")
    )
    assert total(samples, "abstractgateway_runners_live") == 1
    assert total(samples, "abstractgateway_queue_depth") == 0
    assert total(samples, "abstractgateway_commands_pending") == 0
    # Every scrape, whichever worker answers it, reports the same totals.
    for _ in range(8):
        again = scrape(url)
        assert total(again, "abstractgateway_runs_started_total") == total(
            samples, "abstractgateway_runs_started_total"
        )
    # The request id reached the runner's log lines for the work it caused.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    started = {
        line["request_id"] for line in lines if line.get("event") == "run_started" and "request_id" in line
    }
    assert {f"req-start-{i}" for i in range(STARTS + ASKS)} <= started
    commands = {line.get("request_id") for line in lines if line.get("event") == "command"}
    assert {f"req-cmd-{run_id}" for run_id in asks} <= commands
    api_lines = [line for line in lines if line.get("event") == "request"]
    assert api_lines and all(line.get("request_id") for line in api_lines)
    assert TOKEN not in log.read_text()


def test_metrics_need_the_token_unless_opened(served: tuple[str, Path, Path]) -> None:
    url, _, _ = served
    anon = httpx.get(f"{url}/metrics", timeout=30)
    assert anon.status_code == 401 and anon.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401


def test_a_client_request_id_is_kept_only_when_sane(served: tuple[str, Path, Path]) -> None:
    url, _, _ = served
    kept = httpx.get(f"{url}/api/health", headers={"X-Request-ID": "trace-abc.123"}, timeout=30)
    assert kept.headers["x-request-id"] == "trace-abc.123"
    replaced = httpx.get(
        f"{url}/api/health", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200}, timeout=30
    )
    assert replaced.headers["x-request-id"] != "" and " " not in replaced.headers["x-request-id"]
    fresh = httpx.get(f"{url}/api/health", timeout=30).headers["x-request-id"]
    assert len(fresh) == 32


def test_an_operator_may_open_metrics(tmp_path: Path, flows: Path) -> None:
    from .conftest import make_gateway

    with make_gateway(tmp_path, flows, metrics_public=True) as gateway:
        opened = httpx.get(f"{gateway.url}/metrics", timeout=30)
        assert opened.status_code == 200 and opened.headers["content-type"].startswith("text/plain")
        names = {family.name for family in text_string_to_metric_families(opened.text)}
        assert {"abstractgateway_queue_depth", "abstractgateway_runners_live"} <= names
        assert gateway.client.get("/api/gateway/runs").status_code == 200  # the API stays guarded
        assert httpx.get(f"{gateway.url}/api/gateway/runs", timeout=30).status_code == 401


def test_sse_subscribers_are_summed_over_workers(served: tuple[str, Path, Path]) -> None:
    url, _, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        run_id = client.post("/api/gateway/runs/start", json={"bundle_id": "bench-ask"}).json()["run_id"]
    clients = [httpx.Client(base_url=url, headers=auth, timeout=30) for _ in range(4)]
    streams = []
    lines = []  # each stream's line iterator, kept: a dropped generator closes its response
    try:
        for client in clients:  # one connection each: the kernel spreads them over both workers
            stream = client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream")
            response = stream.__enter__()
            assert response.status_code == 200
            lines.append(response.iter_lines())
            assert next(lines[-1]).startswith("retry:")  # the subscription is registered
            streams.append(stream)
        open_count = 0.0
        for _ in range(100):
            open_count = total(scrape(url), "abstractgateway_sse_subscribers")
            if open_count == 4:
                break
            time.sleep(0.05)
        assert open_count == 4
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()
    closed = -1.0
    for _ in range(200):  # a closed stream is noticed at its next write or disconnect
        closed = total(scrape(url), "abstractgateway_sse_subscribers")
        if closed == 0:
            break
        time.sleep(0.05)
    assert closed == 0
    assert ("abstractgateway_change_feed_lag_seconds", ()) in scrape(url)


def test_one_serve_process_counts_in_memory(tmp_path: Path, flows: Path) -> None:
    """Without --workers, serve keeps its counters in its own registry: no multiprocess files (each
    update of those writes through an mmap and checks the pid); /metrics still counts every start, and
    an SSE stream is counted without a latency. A start's audit line carries its request id, and its
    request line is at debug (the audit log records it); a refused write's line stays at info."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(tmp_path, flows) as (url, log, process):
        ids = []
        for _ in range(3):
            started = httpx.post(
                f"{url}/api/gateway/runs/start", json={"bundle_id": "bench-echo"}, headers=auth
            )
            assert started.status_code == 200, started.text
            ids.append((started.json()["run_id"], started.headers["x-request-id"]))
        refused = httpx.post(f"{url}/api/gateway/runs/start", json={"bundle_id": "nope"}, headers=auth)
        assert refused.status_code == 404
        run_id = ids[0][0]
        for _ in range(200):
            if httpx.get(f"{url}/api/gateway/runs/{run_id}", headers=auth).json()["status"] == "completed":
                break
            time.sleep(0.05)
        with httpx.stream("GET", f"{url}/api/gateway/runs/{run_id}/ledger/stream", headers=auth) as stream:
            assert stream.status_code == 200
            assert any(line.startswith("event: done") for line in stream.iter_lines())
        samples = scrape(url)
        maps = Path(f"/proc/{process.pid}/maps").read_text()
    assert total(samples, "abstractgateway_runs_started_total") == 3
    starts = {"route": "/api/gateway/runs/start", "method": "POST", "status": "200"}
    assert total(samples, "abstractgateway_http_requests_total", **starts) == 3
    assert total(samples, "abstractgateway_http_request_duration_seconds_count", route=starts["route"]) == 4
    stream_route = "/api/gateway/runs/{run_id}/ledger/stream"
    assert total(samples, "abstractgateway_http_requests_total", route=stream_route) == 1
    assert total(samples, "abstractgateway_http_request_duration_seconds_count", route=stream_route) == 0
    assert "abstractgateway-metrics-" not in maps  # no counter file mapped
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {(e["ids"].get("run_id"), e["request_id"]) for e in audit if e["status"] == 200} == set(ids)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request" and line.get("method") == "POST"]
    levels = {(line["status"], line["level"]) for line in requests}
    assert levels == {(200, "debug"), (404, "info")}, levels
