"""LLM wiring for the runner: which abstractcore provider serves each llm_call.

Who decides, first match wins:
1. `ABSTRACTGATEWAY_PROVIDER` + `ABSTRACTGATEWAY_MODEL` in this runner's environment: every llm_call of
   the runner goes there and the provider/model pinned in a flow are replaced (the single-provider mode).
2. The flow's llm_call names a provider (and model): that one.
3. The `output.text` capability default in the db (`abstractgateway config set-default output.text`),
   read on every call, so a change reaches every runner without a restart.
Nothing: the run fails with the variables to set. Tool calls are passed through to the caller (the run
waits for their results), never executed on the runner. abstractcore is imported on first use, so
importing this module stays cheap.

The provider instance is one per process and target (`shared_provider`), whatever the number of
workers: a local provider (`huggingface`: transformers in this process) holds the model weights and its
prompt caches, so every worker's client and the prompt-cache control jobs
(runner_service.prompt_cache) must reach the same one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .settings import RunnerConfig, current

if TYPE_CHECKING:
    from abstractruntime.core.models import Effect, RunState
    from abstractruntime.core.runtime import EffectOutcome

    from shared_store.capability_defaults import CapabilityDefault

    EffectHandler = Callable[[RunState, Effect, str | None], EffectOutcome]
    DefaultsReader = Callable[[], CapabilityDefault | None]

ENV_PROVIDER = "ABSTRACTGATEWAY_PROVIDER"
ENV_MODEL = "ABSTRACTGATEWAY_MODEL"
ENV_BASE_URL = "ABSTRACTGATEWAY_BASE_URL"
ENV_API_KEY = "ABSTRACTGATEWAY_API_KEY"

NO_PROVIDER = (
    f"llm_call needs an LLM provider: set {ENV_PROVIDER} and {ENV_MODEL} "
    f"(and {ENV_BASE_URL} for an OpenAI-compatible server), or "
    "`abstractgateway config set-default output.text --provider P --model M`"
)
TEXT_ROUTE = "output.text"


@dataclass(frozen=True)
class LLMSettings:
    """The runner's own LLM settings (environment): with a provider and a model, every llm_call of the
    runner goes there; the api_key also serves the output.text default's provider.

    base_url and api_key left as None fall back to what the provider itself reads (for
    "openai-compatible" and "openai": OPENAI_BASE_URL, OPENAI_API_KEY; "anthropic":
    ANTHROPIC_API_KEY; ...), so the usual provider environment keeps working.
    """

    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LLMSettings:
        """The runner's (runner_service/settings.py), or those `environ` would give."""
        return cls.from_config(current() if environ is None else RunnerConfig.from_env(environ))

    @classmethod
    def from_config(cls, config: RunnerConfig) -> LLMSettings:
        return cls(config.provider, config.model, config.base_url, config.api_key)

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
    return str(current().data_dir / "prompt_cache")


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


Target = tuple[str, str, str | None, str | None]  # provider, model, base_url, api_key


class _RoutedLLMCall:
    """The llm_call handler: picks the provider per call (see the module doc), one client per target.

    Building an abstractcore client probes the server (GET /models) and can fail on a bad provider
    name; doing it on first use keeps runner start independent of the model server, and turns a
    setup error into one failed run with the reason instead of a dead daemon.
    """

    def __init__(self, forced: LLMSettings, defaults: DefaultsReader | None, artifact_store: Any) -> None:
        self._forced = forced
        self._defaults = defaults
        self._artifact_store = artifact_store
        self._lock = threading.Lock()
        self._clients: dict[Target, Any] = {}
        self._handlers: dict[Target, EffectHandler] = {}

    def target(self, payload: Mapping[str, Any]) -> tuple[Target | None, dict[str, Any], str]:
        """(provider, model, base_url, api_key) for this call, the default's options, and who chose."""
        forced = self._forced
        if forced.configured:
            return (str(forced.provider), str(forced.model), forced.base_url, forced.api_key), {}, "env"
        default = self._defaults() if self._defaults is not None else None
        pinned = str(payload.get("provider") or "").strip().lower()
        if pinned:
            same = default if default is not None and default.provider == pinned else None
            model = str(payload.get("model") or "").strip() or (same.model if same else None)
            base_url = same.base_url if same else None
            api_key = forced.api_key if same else None
            return (pinned, model or "", base_url, api_key), dict(same.options) if same else {}, "flow"
        if default is not None:
            target = (default.provider, default.model or "", default.base_url, forced.api_key)
            return target, dict(default.options), f"capability default {TEXT_ROUTE}"
        return None, {}, ""

    def __call__(self, run: RunState, effect: Effect, default_next_node: str | None) -> EffectOutcome:
        from abstractruntime.core.runtime import EffectOutcome

        payload = dict(effect.payload or {})
        target, options, chosen_by = self.target(payload)
        if target is None:
            return EffectOutcome.failed(NO_PROVIDER, retryable=False)
        provider, model = target[0], target[1]
        if not model:
            return EffectOutcome.failed(
                f"llm_call provider {provider!r} ({chosen_by}) has no model: name one in the flow or "
                f"`abstractgateway config set-default {TEXT_ROUTE} --provider {provider} --model M`",
                retryable=False,
            )
        try:
            handler = self._built(target)
        except Exception as exc:  # abstractcore raises assorted types for an unusable provider
            return EffectOutcome.failed(
                f"llm_call could not set up provider {provider!r} model {model!r} (chosen by {chosen_by}; "
                f"{ENV_PROVIDER}/{ENV_MODEL} or the {TEXT_ROUTE} default route elsewhere): {exc}",
                retryable=False,
            )
        if options:
            # The default's options are call parameters (temperature, max_tokens, guided_json, ...);
            # those the flow sets win.
            given = payload.get("params")
            params: dict[str, Any] = given if isinstance(given, dict) else {}
            payload["params"] = {**options, **params}
            effect = dataclasses.replace(effect, payload=payload)
        return handler(run, effect, default_next_node)

    def _built(self, target: Target) -> EffectHandler:
        with self._lock:
            handler = self._handlers.get(target)
            if handler is None:
                from abstractruntime.integrations.abstractcore.effect_handlers import make_llm_call_handler

                client = make_client(LLMSettings(*target), self._artifact_store)
                handler = make_llm_call_handler(llm=client, artifact_store=self._artifact_store)
                self._clients[target], self._handlers[target] = client, handler
            return handler

    def close(self) -> None:
        with self._lock:
            targets = list(self._clients)
            self._clients.clear()
            self._handlers.clear()
        for target in targets:
            release_provider(LLMSettings(*target))


def release_provider(settings: LLMSettings) -> None:
    """Forget this process's provider for `settings` and close its HTTP connections (runner stop)."""
    with _providers_lock:
        provider = _providers.pop((str(settings.provider), str(settings.model), settings.base_url), None)
    http: Any = getattr(provider, "client", None)  # the provider's httpx.Client
    if callable(getattr(http, "close", None)):
        http.close()


def llm_effect_handlers(
    settings: LLMSettings, *, artifact_store: Any = None, defaults: DefaultsReader | None = None
) -> LLMHandlers:
    """Handlers for LLM_CALL (routed per call, or a clear failure) and TOOL_CALLS (passthrough).

    `defaults` reads the output.text capability default (the runner passes a db read)."""
    from abstractruntime.core.models import EffectType
    from abstractruntime.integrations.abstractcore.effect_handlers import make_tool_calls_handler
    from abstractruntime.integrations.abstractcore.tool_executor import PassthroughToolExecutor

    # Passthrough: the run waits with the requested calls for a client to answer; nothing is run here.
    tool_calls = make_tool_calls_handler(tools=PassthroughToolExecutor(), artifact_store=artifact_store)
    llm_call = _RoutedLLMCall(settings, defaults, artifact_store)
    return LLMHandlers({EffectType.LLM_CALL: llm_call, EffectType.TOOL_CALLS: tool_calls}, llm_call.close)
