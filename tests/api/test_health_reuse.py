"""Health's report is reused for a moment on the event loop (a load balancer or dashboard polling it
pays no store read), but never past a write this process made, and never past its deadline."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api_service.routes import health
from shared_store.runners import register_runner, runner_stopped
from tests.api.conftest import make_gateway


def test_health_is_reused_until_this_process_writes(
    tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long reuse window, so what is reused does not depend on how fast this machine runs.
    monkeypatch.setattr(health, "REUSE_S", 3600.0)
    with make_gateway(tmp_path, flows) as gw, httpx.Client(base_url=gw.url, timeout=30) as anonymous:

        def brief() -> str:
            response = anonymous.get("/api/health")
            assert response.status_code == 200 and set(response.json()) == {"status", "service"}
            return str(response.json()["status"])

        def detail() -> dict:
            response = gw.client.get("/api/health")
            assert response.status_code == 200 and "runners" in response.json()
            return dict(response.json())

        assert brief() == "degraded" and detail()["runners"] == []  # no runner yet
        # Another connection's commit (a runner starting elsewhere) is not read yet: both answers
        # are the reused report.
        register_runner(gw.db, "runner-elsewhere", version="test")
        assert [brief() for _ in range(20)] == ["degraded"] * 20
        assert detail()["runners"] == []

        # A write through this API process: the next answer is read anew, for everyone.
        gw.start("bench-echo", {"message": "hi"})
        assert [r["runner_id"] for r in detail()["runners"]] == ["runner-elsewhere"]
        assert brief() == "healthy"

        runner_stopped(gw.db, "runner-elsewhere")
        assert brief() == "healthy"  # reused
        gw.start("bench-echo", {"message": "again"})
        assert brief() == "degraded" and detail()["runners"] == []


def test_health_reuse_has_a_deadline(tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "REUSE_S", 0.0)  # reuse off: every answer is read anew
    with make_gateway(tmp_path, flows) as gw, httpx.Client(base_url=gw.url, timeout=30) as anonymous:
        assert anonymous.get("/api/health").json()["status"] == "degraded"
        register_runner(gw.db, "runner-elsewhere", version="test")
        assert anonymous.get("/api/health").json()["status"] == "healthy"
        assert [r["runner_id"] for r in gw.client.get("/api/health").json()["runners"]] == [
            "runner-elsewhere"
        ]
