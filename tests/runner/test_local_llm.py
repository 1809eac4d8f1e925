"""A real local LLM: demo-llm's llm_call answered by a tiny random Llama through AbstractCore's
HuggingFace provider (transformers, in this process). No fake server; nothing downloads."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

for _module in ("torch", "transformers", "tokenizers"):
    pytest.importorskip(_module, reason=f"the local LLM stack is not installed ({_module} missing)")

from abstractruntime.core.models import RunStatus  # noqa: E402

from runner_service.llm import LLMSettings, llm_effect_handlers  # noqa: E402
from tests.conftest import load_spec  # noqa: E402
from tests.runner.test_llm import make_runtime  # noqa: E402
from tests.runner.tiny_lm import cached_tiny_llama  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_tiny_llama(tmp_path_factory)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF offline, and any connection at all fails the test: the model is in this process."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a local model reached for the network: {address}")
        raise AssertionError("unexpected socket use")

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_demo_llm_is_answered_by_the_tiny_local_model(
    db, tmp_path: Path, flows: Path, tiny_llm: Path
) -> None:
    handlers = llm_effect_handlers(LLMSettings(provider="huggingface", model=str(tiny_llm)))
    runtime = make_runtime(db, tmp_path, handlers)
    spec = load_spec(flows, "demo-llm@0.1.0")
    try:
        run_id = runtime.start(workflow=spec, vars={"prompt": "what is two plus two"})
        started = time.perf_counter()
        state = runtime.tick(workflow=spec, run_id=run_id)
        elapsed = time.perf_counter() - started
    finally:
        handlers.close()
    assert state.status == RunStatus.COMPLETED, state.error
    assert isinstance(state.output["response"], str)
    [call] = [r for r in runtime.ledger_store.list(run_id) if (r.get("effect") or {}).get("type") == "llm_call"
              and r["status"] == "completed"]  # fmt: skip
    result = call["result"]
    assert result["usage"]["input_tokens"] > 0  # the prompt went through the tiny model's tokenizer
    assert str(tiny_llm) in str(result.get("model") or result.get("metadata") or result)
    print(f"llm_call on the tiny local model: {elapsed:.2f} s")  # shown with -s; the note quotes it
