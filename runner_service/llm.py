"""LLM wiring for the runner: one abstractcore provider, configured by environment.

Every llm_call a runner executes goes to the provider/model named here; the provider and model
pinned in a flow are ignored (abstractruntime's single-provider client drops them). Tool calls are
passed through to the caller (the run waits for their results), never executed on the runner.
abstractcore is imported on first use, so importing this module stays cheap.

The provider instance is one per process (`shared_provider`), whatever the number of workers: a
local provider (`huggingface`: transformers in this process) holds the model weights and its
prompt caches, so every worker's client and the prompt-cache control jobs
(runner_service.prompt_cache) must reach the same one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from abstractruntime.core.models import Effect, RunState
    from abstractruntime.core.runtime import EffectOutcome

    EffectHandler = Callable[[RunState, Effect, str | None], EffectOutcome]

ENV_PROVIDER = "ABSTRACTGATEWAY_PROVIDER"
ENV_MODEL = "ABSTRACTGATEWAY_MODEL"
ENV_BASE_URL = "ABSTRACTGATEWAY_BASE_URL"
ENV_API_KEY = "ABSTRACTGATEWAY_API_KEY"

NO_PROVIDER = (
    f"llm_call needs an LLM provider: set {ENV_PROVIDER} and {ENV_MODEL} "
    f"(and {ENV_BASE_URL} for an OpenAI-compatible server)"
)


@dataclass(frozen=True)
class LLMSettings:
    """Which abstractcore provider serves llm_call.

    base_url and api_key left as None fall back to what the provider itself reads (for
    "openai-compatible" and "openai": OPENAI_BASE_URL, OPENAI_API_KEY; "anthropic":
    ANTHROPIC_API_KEY; ...), so the usual provider environment keeps working.
    """

    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LLMSettings:
        def get(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        return cls(get(ENV_PROVIDER), get(ENV_MODEL), get(ENV_BASE_URL), get(ENV_API_KEY))

    @property
    def configured(self) -> bool:
        return bool(self.provider and self.model)

    def llm_kwargs(self) -> dict[str, Any]:
        """Provider constructor arguments; only what is set, so abstractcore's own defaults apply."""
        from abstractruntime.integrations.abstractcore.constants import DEFAULT_LLM_READ_IDLE_TIMEOUT_S

        # A stream that sends nothing for this long is dead; the total budget stays abstractcore's.
        kwargs: dict[str, Any] = {"read_idle_timeout_s": float(DEFAULT_LLM_READ_IDLE_TIMEOUT_S)}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if self.api_key:
            kwargs["api_key"] = self.api_key
        return kwargs


_providers_lock = threading.Lock()
_providers: dict[
    tuple[str, str, str | None], Any
] = {}  # (provider, model, base_url) -> abstractcore provider


def shared_provider(settings: LLMSettings, **kwargs: Any) -> Any:
    """This process's abstractcore provider for `settings`, created on first use."""
    key = (str(settings.provider), str(settings.model), settings.base_url)
    with _providers_lock:
        provider = _providers.get(key)
        if provider is None:
            from abstractcore import create_llm

            provider = _providers[key] = create_llm(
                str(settings.provider), model=str(settings.model), **kwargs
            )
        return provider


def prompt_cache_export_dir() -> str:
    """Where saved prompt caches go: DATA_DIR/prompt_cache (the runner's data dir)."""
    return str(Path(os.environ.get("ABSTRACTGATEWAY_DATA_DIR", "").strip() or "data") / "prompt_cache")


def make_client(settings: LLMSettings, artifact_store: Any = None) -> Any:
    """An abstractruntime client over this process's shared provider."""
    from abstractruntime.integrations.abstractcore.llm_client import LocalAbstractCoreLLMClient

    return LocalAbstractCoreLLMClient(
        provider=str(settings.provider),
        model=str(settings.model),
        llm_kwargs=settings.llm_kwargs(),
        artifact_store=artifact_store,
        prompt_cache_export_root_dir=prompt_cache_export_dir(),
        llm_factory=lambda model, **kwargs: shared_provider(settings, **kwargs),
    )


class LLMHandlers(dict[Any, "EffectHandler"]):
    """EffectType -> handler, as `Runtime(effect_handlers=...)` takes it; close() frees the provider."""

    def __init__(
        self, handlers: Mapping[Any, EffectHandler], close: Callable[[], None] | None = None
    ) -> None:
        super().__init__(handlers)
        self._close = close

    def close(self) -> None:
        """Close the provider's HTTP connections (the handlers rebuild them if called again)."""
        if self._close is not None:
            self._close()


class _LazyLLMCall:
    """The llm_call handler, built on first use.

    Building the abstractcore client probes the server (GET /models) and can fail on a bad
    provider name; doing it on first use keeps runner start independent of the model server, and
    turns a setup error into one failed run with the reason instead of a dead daemon.
    """

    def __init__(self, settings: LLMSettings, artifact_store: Any) -> None:
        self._settings = settings
        self._artifact_store = artifact_store
        self._lock = threading.Lock()
        self._client: Any = None
        self._handler: EffectHandler | None = None

    def __call__(self, run: RunState, effect: Effect, default_next_node: str | None) -> EffectOutcome:
        from abstractruntime.core.runtime import EffectOutcome

        try:
            handler = self._built()
        except Exception as exc:  # abstractcore raises assorted types for an unusable provider
            s = self._settings
            return EffectOutcome.failed(
                f"llm_call could not set up provider {s.provider!r} model {s.model!r} "
                f"({ENV_PROVIDER}/{ENV_MODEL}): {exc}",
                retryable=False,
            )
        return handler(run, effect, default_next_node)

    def _built(self) -> EffectHandler:
        with self._lock:
            if self._handler is None:
                from abstractruntime.integrations.abstractcore.effect_handlers import make_llm_call_handler

                self._client = make_client(self._settings, self._artifact_store)
                self._handler = make_llm_call_handler(llm=self._client, artifact_store=self._artifact_store)
            return self._handler

    def close(self) -> None:
        with self._lock:
            self._client, self._handler = None, None
        release_provider(self._settings)


def release_provider(settings: LLMSettings) -> None:
    """Forget this process's provider for `settings` and close its HTTP connections (runner stop)."""
    with _providers_lock:
        provider = _providers.pop((str(settings.provider), str(settings.model), settings.base_url), None)
    http = getattr(provider, "client", None)  # the provider's httpx.Client
    if callable(getattr(http, "close", None)):
        http.close()


def _no_provider(run: RunState, effect: Effect, default_next_node: str | None) -> EffectOutcome:
    from abstractruntime.core.runtime import EffectOutcome

    # Not retryable: the same configuration fails the same way on every attempt.
    return EffectOutcome.failed(NO_PROVIDER, retryable=False)


def llm_effect_handlers(settings: LLMSettings, *, artifact_store: Any = None) -> LLMHandlers:
    """Handlers for LLM_CALL (the configured provider, or a clear failure) and TOOL_CALLS (passthrough)."""
    from abstractruntime.core.models import EffectType
    from abstractruntime.integrations.abstractcore.effect_handlers import make_tool_calls_handler
    from abstractruntime.integrations.abstractcore.tool_executor import PassthroughToolExecutor

    # Passthrough: the run waits with the requested calls for a client to answer; nothing is run here.
    tool_calls = make_tool_calls_handler(tools=PassthroughToolExecutor(), artifact_store=artifact_store)
    if not settings.configured:
        return LLMHandlers({EffectType.LLM_CALL: _no_provider, EffectType.TOOL_CALLS: tool_calls})
    llm_call = _LazyLLMCall(settings, artifact_store)
    return LLMHandlers({EffectType.LLM_CALL: llm_call, EffectType.TOOL_CALLS: tool_calls}, llm_call.close)
