"""The anonymous health answer is reused for a moment on the event loop (a load balancer polling it
pays no store read), but never past a write this process made; token holders always get a fresh
report."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api_service.routes import health
from shared_store.runners import register_runner, runner_stopped
from tests.api.conftest import make_gateway


def test_brief_health_is_reused_until_this_process_writes(
    tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long reuse window, so what is reused does not depend on how fast this machine runs.
    monkeypatch.setattr(health, "BRIEF_REUSE_S", 3600.0)
    with make_gateway(tmp_path, flows) as gw, httpx.Client(base_url=gw.url, timeout=30) as anonymous:

        def brief() -> str:
            response = anonymous.get("/api/health")
            assert response.status_code == 200 and set(response.json()) == {"status", "service"}
            return str(response.json()["status"])

        assert brief() == "degraded"  # no runner yet
        # Another connection's commit (a runner starting elsewhere): the detail sees it at once ...
        register_runner(gw.db, "runner-elsewhere", version="test")
        detail = gw.client.get("/api/health").json()
        assert detail["status"] == "healthy" and [r["runner_id"] for r in detail["runners"]] == [
            "runner-elsewhere"
        ]
        # ... and refreshed the brief answer on the way.
        assert brief() == "healthy"

        runner_stopped(gw.db, "runner-elsewhere")
        assert brief() == "healthy"  # reused: nothing was written through this process
        assert [brief() for _ in range(20)] == ["healthy"] * 20

        # A write through this API process: the next anonymous answer is read anew.
        gw.start("bench-echo", {"message": "hi"})
        assert brief() == "degraded"
        assert gw.client.get("/api/health").json()["status"] == "degraded"


def test_brief_health_reuse_has_a_deadline(
    tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "BRIEF_REUSE_S", 0.0)  # reuse off: every answer is read anew
    with make_gateway(tmp_path, flows) as gw, httpx.Client(base_url=gw.url, timeout=30) as anonymous:
        assert anonymous.get("/api/health").json()["status"] == "degraded"
        register_runner(gw.db, "runner-elsewhere", version="test")
        assert anonymous.get("/api/health").json()["status"] == "healthy"
