"""Discovery and health show the capability defaults and whether the output.text LLM endpoint answers
(a loopback stand-in for vLLM here); health, which is open, never shows the endpoint's URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared_store.capability_defaults import set_default
from tests.api.conftest import Gateway, free_port, make_gateway
from tests.runner.fake_openai import FAKE_MODEL, running_fake_openai


def health_when(gw: Gateway, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first health report `ready` accepts (reports are reused for up to 0.1 s)."""
    deadline = time.monotonic() + 30
    while True:
        health: dict[str, Any] = gw.client.get("/api/health").json()
        if ready(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.02)


def test_discovery_and_health_report_the_text_endpoint(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows) as gw, running_fake_openai() as fake:
        assert gw.client.get("/api/health").json()["llm"] is None  # no default: nothing to say
        set_default(gw.db, "output.text", provider="vllm", model=FAKE_MODEL, base_url=fake.base_url)
        set_default(
            gw.db, "output.voice", provider="piper", model="/models/amy.onnx", options={"voice": "amy"}
        )

        caps = gw.client.get("/api/gateway/discovery/capabilities").json()["capabilities"]
        routes = {d["route"]: d for d in caps["capability_defaults"]}
        assert routes["output.voice"]["options"] == {"voice": "amy"}
        assert routes["output.text"]["base_url"] == fake.base_url
        llm = caps["llm"]
        assert llm["answers"] is True and llm["provider"] == "vllm" and llm["base_url"] == fake.base_url
        assert llm["served_models"] == [FAKE_MODEL] and llm["model_served"] is True
        assert any(r.method == "GET" and r.path == "/v1/models" for r in fake.requests)

        # set_default wrote through another connection (as `abstractgateway config` does): health
        # reuses its report up to routes/health.REUSE_S, then reads it anew.
        health = health_when(gw, lambda h: h["llm"] is not None)
        assert health["llm"] == {"route": "output.text", "provider": "vllm", "answers": True}
        assert not any("LLM endpoint" in p for p in health["problems"])

        # Nothing listens there: health is degraded, with the reason, and the URL stays out of it.
        silent = f"http://127.0.0.1:{free_port()}/v1"
        set_default(gw.db, "output.text", provider="vllm", model=FAKE_MODEL, base_url=silent)
        health = health_when(gw, lambda h: h["llm"]["answers"] is False)
        assert health["status"] == "degraded" and health["llm"]["answers"] is False
        assert "the output.text LLM endpoint (vllm) does not answer" in health["problems"]
        assert silent not in str(health)
        llm = gw.client.get("/api/gateway/discovery/capabilities").json()["capabilities"]["llm"]
        assert llm["answers"] is False and silent in llm["detail"]


def test_a_hosted_provider_without_a_url_is_not_probed(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows) as gw:
        set_default(gw.db, "output.text", provider="openai", model="gpt-4o-mini")
        assert gw.client.get("/api/health").json()["llm"]["answers"] is None
        llm = gw.client.get("/api/gateway/discovery/capabilities").json()["capabilities"]["llm"]
        assert llm["answers"] is None and llm["base_url"] is None and "not probed" in llm["detail"]
