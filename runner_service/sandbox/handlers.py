"""Statement-level code of a flow runs in the sandbox process instead of the runner's.

abstractruntime's visual compiler builds a code node's callable with `create_code_handler` and a
flow's function library with `compile_function_library`, both looked up in its executor module's
globals when a flow is compiled or a code node first runs. `install()` binds the gateway's versions
there (the installed package is not edited):

- a code node's handler checks the code statically in the runner (clear early errors), then sends
  the code and its input to the sandbox; an error in the code comes back as CodeExecutionError (the
  node fails, the run completes with output.success=false, as abstractruntime does); a limit, a
  timeout or a cancel raises SandboxStop, which passes abstractruntime's `except Exception` so the
  worker fails (or cancels) the run.
- flow functions are compiled in the sandbox at build time (refusals attributed as before), and
  each call from a pin expression is a sandbox call with JSON arguments and a JSON answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from abstractruntime.visualflow_compiler.visual import executor
from abstractruntime.visualflow_compiler.visual.code_executor import (
    CodeExecutionError,
    normalize_code_permissions,
    validate_code,
)
from abstractruntime.visualflow_compiler.visual.function_library import (
    FunctionLibraryError,
    normalize_flow_functions,
)
from abstractruntime.visualflow_compiler.visual.pin_expressions import _strip_views

from . import guards
from .client import SandboxLimit, SandboxSettings, thread_client

_context = threading.local()


@contextmanager
def run_context(
    run_id: str, cancelled: Callable[[], bool], park: Callable[[bool], None] | None = None
) -> Iterator[None]:
    """While a worker ticks `run_id`: sandbox calls look at `cancelled()` as they wait, and tell
    `park(True)` when a wait gets slow and `park(False)` when it ends (others are served meanwhile)."""
    previous = getattr(_context, "value", None)
    _context.value = (run_id, cancelled, park)
    try:
        yield
    finally:
        _context.value = previous


def _cancelled() -> Callable[[], bool] | None:
    value = getattr(_context, "value", None)
    return None if value is None else value[1]


class SandboxedCode:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings

    def _call(self, request: dict[str, Any]) -> Any:
        value = getattr(_context, "value", None)
        park = None if value is None else value[2]
        parked = False

        def slow() -> None:
            nonlocal parked
            if park is not None:
                parked = True
                park(True)

        try:
            reply = thread_client(self.settings).call(request, _cancelled(), slow)
        finally:
            if parked and park is not None:
                park(False)
        if reply.get("ok"):
            return reply.get("result")
        if reply.get("kind") == "limit":
            raise SandboxLimit(f"code node over its limit: {reply.get('error')}")
        raise CodeExecutionError(str(reply.get("error")))

    def create_code_handler(
        self, code: str, function_name: str = "transform", *, permissions: Any = "sandbox"
    ) -> Callable[[Any], Any]:
        if normalize_code_permissions(permissions) != "sandbox":
            raise CodeExecutionError(
                "full_access code execution is not available in the gateway: code runs in its sandbox"
            )
        validate_code(code)

        def handler(input_data: Any) -> Any:
            return self._call({"op": "code", "code": code, "function": function_name, "input": input_data})

        return handler

    def compile_function_library(self, functions: Any) -> dict[str, Callable[..., Any]]:
        entries = normalize_flow_functions(functions)
        if not entries:
            return {}
        try:
            names = self._call({"op": "library_compile", "functions": entries})
        except SandboxLimit as exc:  # at build time: the flow does not compile, with the reason
            raise FunctionLibraryError(f"flow functions: {exc}") from None
        except CodeExecutionError as exc:
            raise FunctionLibraryError(str(exc)) from None
        return {name: self._proxy(entries, name) for name in names}

    def _proxy(self, entries: list[dict[str, str]], name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            request = {
                "op": "library_call",
                "functions": entries,
                "name": name,
                "args": _strip_views(list(args)),
                "kwargs": _strip_views(kwargs),
            }
            return self._call(request)

        call.__name__ = name
        return call


_installed: SandboxedCode | None = None


def install(settings: SandboxSettings) -> SandboxedCode:
    """Route this process's code nodes and flow functions to the sandbox (idempotent)."""
    global _installed
    guards.install()  # pin expressions, the tier that stays in the runner
    if _installed is None or _installed.settings != settings:
        _installed = SandboxedCode(settings)
        executor.create_code_handler = _installed.create_code_handler
        executor.compile_function_library = _installed.compile_function_library
    return _installed
