"""runner_service.llm: demo-llm against a fake OpenAI-compatible server, and without a provider."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import Runtime
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, WaitReason
from abstractruntime.core.policy import RetryPolicy

from runner_service.llm import NO_PROVIDER, LLMHandlers, LLMSettings, llm_effect_handlers
from shared_store.artifact_store import SqliteArtifactStore
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore
from tests.conftest import load_spec
from tests.runner.fake_openai import FAKE_MODEL, FakeOpenAI, running_fake_openai

# Variables a developer's shell may carry that abstractcore providers read on their own.
PROVIDER_ENV = ["OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY"]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real keys, and any connection off 127.0.0.1 fails the test."""
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach the network: {address}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai() as server:
        yield server


def make_runtime(db: Any, tmp_path: Path, handlers: LLMHandlers, **kwargs: Any) -> Runtime:
    return Runtime(
        run_store=SqliteRunStore(db),
        ledger_store=SqliteLedgerStore(db),
        artifact_store=SqliteArtifactStore(db, tmp_path / "artifacts"),
        effect_handlers=handlers,
        **kwargs,
    )


def test_settings_from_env_read_the_gateway_variables() -> None:
    env = {
        "ABSTRACTGATEWAY_PROVIDER": "openai-compatible",
        "ABSTRACTGATEWAY_MODEL": " m1 ",
        "ABSTRACTGATEWAY_BASE_URL": "http://127.0.0.1:1234/v1",
        "ABSTRACTGATEWAY_API_KEY": "",
    }
    settings = LLMSettings.from_env(env)
    assert settings == LLMSettings("openai-compatible", "m1", "http://127.0.0.1:1234/v1", None)
    assert settings.configured and not LLMSettings.from_env({}).configured
    assert "secret" not in repr(LLMSettings("openai", "m", api_key="secret"))


def test_demo_llm_completes_against_a_fake_openai_server(db, tmp_path: Path, flows: Path, fake) -> None:
    settings = LLMSettings(provider="openai-compatible", model=FAKE_MODEL, base_url=fake.base_url)
    handlers = llm_effect_handlers(settings)
    runtime = make_runtime(db, tmp_path, handlers)
    spec = load_spec(flows, "demo-llm@0.1.0")
    try:
        run_id = runtime.start(workflow=spec, vars={"prompt": "what is two plus two"})
        state = runtime.tick(workflow=spec, run_id=run_id)
    finally:
        handlers.close()

    assert state.status == RunStatus.COMPLETED, state.error
    assert "fake answer:" in state.output["response"] and "what is two plus two" in state.output["response"]
    assert runtime.run_store.load(run_id).status == RunStatus.COMPLETED
    assert len(fake.chat_requests) >= 1
    # The gateway's model is used, not the one pinned in the flow's node.
    assert all(r.body and r.body["model"] == FAKE_MODEL for r in fake.chat_requests)
    assert all(r.authorization is None for r in fake.requests)  # no key configured, none sent
    assert runtime.ledger_store.list(run_id)[-1]["status"] == "completed"


def test_streamed_llm_call_reads_the_sse_answer(fake) -> None:
    """The fake's stream=true path, through the same handler the runtime calls."""
    handlers = llm_effect_handlers(LLMSettings("openai-compatible", FAKE_MODEL, fake.base_url, "test-key"))
    run = RunState.new(workflow_id="w", entry_node="n")
    effect = Effect(type=EffectType.LLM_CALL, payload={"prompt": "stream me", "params": {"stream": True}})
    try:
        outcome = handlers[EffectType.LLM_CALL](run, effect, None)
    finally:
        handlers.close()
    assert outcome.status == "completed", outcome.error
    assert "fake answer:" in outcome.result["content"] and "stream me" in outcome.result["content"]
    assert any(r.body and r.body.get("stream") for r in fake.chat_requests)
    assert {r.authorization for r in fake.requests} == {"Bearer test-key"}


@pytest.mark.parametrize(
    "settings", [LLMSettings(), LLMSettings(provider="openai-compatible")], ids=["nothing", "no-model"]
)
def test_without_a_provider_the_run_fails_with_the_reason(db, tmp_path: Path, settings) -> None:
    """Nothing in the env, no provider named by the flow, no output.text default: a clear failure."""
    from abstractruntime.visualflow_compiler import compile_visualflow

    from tests.visualflows import llm_flow

    # A retrying policy must still fail at once: the error is not transient.
    runtime = make_runtime(db, tmp_path, llm_effect_handlers(settings), effect_policy=RetryPolicy())
    spec = compile_visualflow(llm_flow("unpinned"))
    run_id = runtime.start(workflow=spec, vars={"prompt": "hi"})
    state = runtime.tick(workflow=spec, run_id=run_id)

    assert state.status == RunStatus.FAILED
    assert NO_PROVIDER in (state.error or "")
    assert runtime.run_store.load(run_id).status == RunStatus.FAILED
    assert NO_PROVIDER in json.dumps(runtime.ledger_store.list(run_id))


def test_a_provider_the_flow_pins_is_used_when_the_env_names_none(db, tmp_path: Path, flows: Path) -> None:
    """demo-llm pins provider "fake": with no env provider, that pin is what the run asks for."""
    runtime = make_runtime(db, tmp_path, llm_effect_handlers(LLMSettings()))
    spec = load_spec(flows, "demo-llm@0.1.0")
    run_id = runtime.start(workflow=spec, vars={"prompt": "hi"})
    state = runtime.tick(workflow=spec, run_id=run_id)
    assert state.status == RunStatus.FAILED
    assert "provider 'fake'" in (state.error or "") and "chosen by flow" in (state.error or "")


def test_an_unknown_provider_fails_the_run_not_the_runner(db, tmp_path: Path, flows: Path) -> None:
    handlers = llm_effect_handlers(LLMSettings(provider="no-such-provider", model="m"))
    runtime = make_runtime(db, tmp_path, handlers)
    spec = load_spec(flows, "demo-llm@0.1.0")
    run_id = runtime.start(workflow=spec, vars={"prompt": "hi"})
    state = runtime.tick(workflow=spec, run_id=run_id)
    assert state.status == RunStatus.FAILED
    assert "no-such-provider" in (state.error or "") and "ABSTRACTGATEWAY_PROVIDER" in (state.error or "")


def test_tool_calls_are_passed_through_not_executed(tmp_path: Path) -> None:
    handlers = llm_effect_handlers(LLMSettings())
    run = RunState.new(workflow_id="w", entry_node="n")
    target = tmp_path / "must-not-exist"
    call = {"name": "execute_command", "arguments": {"command": f"touch {target}"}, "call_id": "c1"}
    effect = Effect(type=EffectType.TOOL_CALLS, payload={"tool_calls": [call]})
    # Inside a run's workspace, as the runner calls it (outside one, once the gateway's workspace
    # confinement is installed in this process, every tool effect is refused).
    from runner_service.workspace import run_workspace

    with run_workspace(tmp_path / "workspaces", run.run_id):
        outcome = handlers[EffectType.TOOL_CALLS](run, effect, "next")
    assert outcome.status == "waiting"
    assert outcome.wait is not None and outcome.wait.reason == WaitReason.EVENT
    details = outcome.wait.details
    assert details is not None and details["mode"] == "passthrough" and len(details["tool_calls"]) == 1
    (passed,) = details["tool_calls"]
    assert (passed["name"], passed["call_id"]) == (call["name"], call["call_id"])
    assert passed["arguments"]["command"] == call["arguments"]["command"]
    # Confinement installed in this process adds the run's workspace scope to the call, never another.
    extra = {k: v for k, v in passed["arguments"].items() if k != "command"}
    assert all(str(tmp_path / "workspaces") in str(v) for v in extra.values() if "/" in str(v)), extra
    assert not target.exists()


def test_a_provider_without_prompt_cache_control_answers_unavailable(
    fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The runner's LLM is an Ollama server (the loopback stand-in answers for it): abstractcore says that
    provider has no prompt-cache control, so every operation answers supported=false,
    prompt_cache_unavailable; so does a gateway with no LLM configured."""
    from runner_service import prompt_cache

    monkeypatch.setenv("ABSTRACTGATEWAY_PROVIDER", "ollama")
    monkeypatch.setenv("ABSTRACTGATEWAY_MODEL", FAKE_MODEL)
    monkeypatch.setenv("ABSTRACTGATEWAY_BASE_URL", fake.base_url.removesuffix("/v1"))
    monkeypatch.setenv("ABSTRACTGATEWAY_DATA_DIR", str(tmp_path))
    target = {"provider": "ollama", "model": FAKE_MODEL}
    for operation, extra in (("capabilities", {}), ("set", {"key": "k"}), ("stats", {}), ("saved", {})):
        answer = prompt_cache.run_operation(operation, {**target, **extra})
        assert (answer["ok"], answer["supported"], answer["code"]) == (
            False,
            False,
            "prompt_cache_unavailable",
        )
        assert answer["capabilities"]["supported"] is False
    session = prompt_cache.run_operation(
        "session_prepare", {**target, "session_id": "s1", "system_prompt": "x"}
    )
    assert session["supported"] is False and session["code"] == "prompt_cache_unavailable"
    assert session["prompt_cache_key"].endswith(":session") and session["mode"] == "unsupported"
    monkeypatch.delenv("ABSTRACTGATEWAY_PROVIDER")
    nothing = prompt_cache.run_operation("capabilities", target)
    assert nothing["code"] == "prompt_cache_unavailable" and "ABSTRACTGATEWAY_PROVIDER" in nothing["error"]
    listed = prompt_cache.run_operation("sessions_list", {})
    assert listed["ok"] is False and listed["code"] == "session_caches_unavailable" and listed["caches"] == []


def test_a_keyed_provider_selects_keys_but_has_no_local_control_plane(
    fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An OpenAI-compatible server takes `prompt_cache_key` (mode keyed: set / clear / stats) but abstractcore
    has no update, fork, module preparation, save or load for it: those answer prompt_cache_unsupported."""
    from runner_service import prompt_cache

    monkeypatch.setenv("ABSTRACTGATEWAY_PROVIDER", "openai-compatible")
    monkeypatch.setenv("ABSTRACTGATEWAY_MODEL", FAKE_MODEL)
    monkeypatch.setenv("ABSTRACTGATEWAY_BASE_URL", fake.base_url)
    monkeypatch.setenv("ABSTRACTGATEWAY_DATA_DIR", str(tmp_path))
    target = {"provider": "openai-compatible", "model": FAKE_MODEL}
    caps = prompt_cache.run_operation("capabilities", target)
    assert caps["supported"] is True and caps["capabilities"]["mode"] == "keyed"
    assert prompt_cache.run_operation("set", {**target, "key": "k"})["ok"] is True
    for operation, extra in (
        ("update", {"key": "k", "prompt": "hi"}),
        ("fork", {"from_key": "k", "to_key": "k2"}),
        ("prepare_modules", {"namespace": "n", "modules": [{"module_id": "system", "system_prompt": "x"}]}),
        ("save", {"name": "snap", "key": "k"}),
    ):
        answer = prompt_cache.run_operation(operation, {**target, **extra})
        assert answer["ok"] is False and answer["supported"] is False, (operation, answer)
    assert fake.chat_requests == []  # control operations never generate
