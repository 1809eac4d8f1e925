"""gateway → runner → abstractcore → transformers: the real API over Hypercorn, a runner process whose
LLM is a tiny random Llama through AbstractCore's HuggingFace provider (no fake server; offline), an
`llm_call` run (demo-llm) completed by it, and every prompt-cache route answered by that runner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import store_args

for _module in ("torch", "transformers", "tokenizers"):
    pytest.importorskip(_module, reason=f"the local LLM stack is not installed ({_module} missing)")

from tests.api.conftest import Gateway, make_gateway, stop_process  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.runner.tiny_lm import cached_tiny_llama  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
WAIT = {"wait_s": 240}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(cached_tiny_llama(tmp_path_factory))


@pytest.fixture(scope="module")
def llm_gateway(tmp_path_factory: pytest.TempPathFactory, flows: Path, model: str) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("local-llm")
    with make_gateway(tmp, flows) as gateway:
        env = {**os.environ, **OFFLINE, "ABSTRACTGATEWAY_DATA_DIR": str(tmp)}
        env.update(ABSTRACTGATEWAY_PROVIDER="huggingface", ABSTRACTGATEWAY_MODEL=model)
        env.pop("ABSTRACTGATEWAY_BASE_URL", None)
        args = [
            sys.executable,
            "-m",
            "abstractgateway",
            "runner",
            *store_args(gateway.db_path),
            "--poll-s",
            "0.02",
        ]
        with (tmp / "runner.log").open("ab") as log:
            runner = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            yield gateway
        finally:
            stop_process(runner)


def test_an_llm_call_run_is_completed_by_the_tiny_local_model(llm_gateway: Gateway, model: str) -> None:
    run_id = llm_gateway.start("demo-llm", {"prompt": "what is two plus two"})
    started = time.perf_counter()
    view = llm_gateway.wait_for(run_id, lambda v: v["status"] in ("completed", "failed"), tries=15_000)
    elapsed = time.perf_counter() - started
    assert view["status"] == "completed", view
    ledger = llm_gateway.client.get(f"/api/gateway/runs/{run_id}/ledger", params={"limit": 100}).json()
    records = [item.get("record", item) for item in ledger["items"]]
    [call] = [
        r for r in records if (r.get("effect") or {}).get("type") == "llm_call" and r["status"] == "completed"
    ]
    assert call["result"]["usage"]["input_tokens"] > 0  # the prompt went through the tiny model's tokenizer
    assert model in str(call["result"])  # the local model answered, no server
    # Once warm (torch and the model loaded), a run is the llm_call plus the gateway's round trips.
    again = llm_gateway.start("demo-llm", {"prompt": "and three plus three"})
    warm_start = time.perf_counter()
    view = llm_gateway.wait_for(again, lambda v: v["status"] in ("completed", "failed"), tries=15_000)
    warm = time.perf_counter() - warm_start
    assert view["status"] == "completed", view
    print(f"demo-llm through the gateway: first {elapsed:.2f} s (runner loading), warm {warm:.2f} s")


def _get(gw: Gateway, path: str, **params: Any) -> dict[str, Any]:
    response = gw.client.get(f"/api/gateway/{path}", params={**params, **WAIT}, timeout=260)
    assert response.status_code == 200, response.text
    return response.json()


def _post(gw: Gateway, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = gw.client.post(f"/api/gateway/{path}", json=body, params=WAIT, timeout=260)
    assert response.status_code == 200, response.text
    return response.json()


def test_prompt_cache_control_on_the_local_model(llm_gateway: Gateway, model: str) -> None:
    gw, target = llm_gateway, {"provider": "huggingface", "model": model}
    caps = _get(gw, "prompt_cache/capabilities", **target)
    assert caps["supported"] is True and caps["child_run_id"]
    assert caps["capabilities"]["mode"] == "local_control_plane"
    assert all(caps["capabilities"][f"supports_{op}"] for op in ("set", "update", "fork", "clear", "stats"))

    assert _post(gw, "prompt_cache/set", {**target, "key": "k1", "make_default": False})["ok"] is True
    assert _post(gw, "prompt_cache/update", {**target, "key": "k1", "prompt": "the answer is four"})["ok"]
    assert _post(gw, "prompt_cache/fork", {**target, "from_key": "k1", "to_key": "k2"})["ok"] is True
    stats = _get(gw, "prompt_cache/stats", **target)
    assert stats["supported"] is True and {"k1", "k2"} <= set(stats["stats"]["keys"])
    modules = [{"module_id": "system", "system_prompt": "be brief", "scope": "shared"}]
    prepared = _post(gw, "prompt_cache/prepare_modules", {**target, "namespace": "ns", "modules": modules})
    assert prepared["supported"] is True and prepared["final_cache_key"].startswith("ns:")

    saved = _post(gw, "prompt_cache/save", {**target, "name": "snap", "key": "k1"})
    assert saved["ok"] is True and saved["operation"] == "export"
    listed = _get(gw, "prompt_cache/saved", **target)
    assert [item["name"] for item in listed["items"]] == ["snap"]
    loaded = _post(gw, "prompt_cache/load", {**target, "name": "snap", "key": "k3"})
    assert loaded["ok"] is True and loaded["operation"] == "import"
    assert _post(gw, "prompt_cache/clear", {**target, "key": "k2"})["ok"] is True
    keys = set(_get(gw, "prompt_cache/stats", **target)["stats"]["keys"])
    assert "k3" in keys and "k2" not in keys


def test_session_prompt_cache_on_the_local_model(llm_gateway: Gateway, model: str) -> None:
    gw, target = llm_gateway, {"provider": "huggingface", "model": model}
    session = "sessions/chat-7/prompt_cache"
    status = _get(gw, f"{session}/status", **target)
    assert status["ok"] is True and status["mode"] == "local_control_plane"
    key = status["prompt_cache_key"]
    assert key.startswith("agw.pc.v1.s-chat-7.") and key.endswith(":session")
    assert status["runtime_hint"]["prompt_cache_key"] == key and status["identity"]["session_id"] == "chat-7"

    prepared = _post(gw, f"{session}/prepare", {**target, "system_prompt": "be brief"})
    assert prepared["ok"] is True and prepared["prepared"] is True and prepared["prompt_cache_key"] == key
    assert set(prepared["provider_responses"]) == {"prepare_modules", "fork"}
    assert key in _get(gw, "prompt_cache/stats", **target)["stats"]["keys"]
    listed = _get(gw, "sessions/prompt_cache")
    assert listed["ok"] is True and key in [row["key"] for row in listed["caches"]]

    cleared = _post(gw, f"{session}/clear", target)
    assert cleared["ok"] is True and cleared["cleared"] is True
    assert key not in _get(gw, "prompt_cache/stats", **target)["stats"]["keys"]
    # Rebuild on a cleared key: the clear finds no key (a warning), the prepare makes it again.
    rebuilt = _post(gw, f"{session}/rebuild", {**target, "system_prompt": "be brief"})
    assert rebuilt["operation"] == "rebuild" and rebuilt["ok"] is True and rebuilt["warnings"]
    assert rebuilt["clear_result"]["code"] == "prompt_cache_missing_key"
    assert rebuilt["prepare_result"]["prepared"] is True
    assert key in _get(gw, "prompt_cache/stats", **target)["stats"]["keys"]
    again = _post(gw, f"{session}/rebuild", {**target, "system_prompt": "be brief"})
    assert again["clear_result"]["cleared"] is True and again["ok"] is True and "warnings" not in again
    everything = _post(gw, f"{session}/clear_all")
    assert everything["ok"] is True and everything["count"] == len(everything["cleared"])


def test_another_provider_has_no_prompt_cache_here(llm_gateway: Gateway) -> None:
    answer = _get(llm_gateway, "prompt_cache/capabilities", provider="openai", model="gpt-4o")
    assert (answer["ok"], answer["supported"], answer["code"]) == (False, False, "prompt_cache_unavailable")
    session = _post(llm_gateway, "sessions/s/prompt_cache/prepare", {"provider": "openai", "model": "gpt-4o"})
    assert session["supported"] is False and session["code"] == "prompt_cache_unavailable"
    assert session["prompt_cache_key"].endswith(":session")  # the identity is still derived
