"""The attribute and import guards that close the module-attribute hole in abstractruntime's sandbox.

abstractruntime's RestrictedPython sandbox checks the NAME of every import (`os` is refused) but not
what an allowed module carries: `import shlex; os = shlex.os` (or `from shlex import os`) reached `os`,
then `os.system`. These guards vet what an attribute read or a `from m import x` yields: a module is
allowed only when importing it by name would be, and a function or class defined in a refused module
(`shlex.os.system`, a re-exported `subprocess.run`) is refused the same way.

They are bound into abstractruntime's three tiers by `install()` — code nodes and flow functions
(which run in the sandbox child, see zygote.py) and pin expressions (which stay in the runner: they
cannot import, and since flow functions answer across a JSON boundary no module can reach them).
"""

from __future__ import annotations

import types
from typing import Any

from abstractruntime.visualflow_compiler.visual import code_executor, function_library, pin_expressions
from abstractruntime.visualflow_compiler.visual.code_executor import CodeExecutionError, sandbox_import_reason
from RestrictedPython.Guards import safer_getattr

_ORIGINAL_IMPORT = code_executor._sandbox_import


def _defining_module(value: Any) -> str | None:
    """The module a value comes from: a module's own name, or a function/class's `__module__`."""
    if isinstance(value, types.ModuleType):
        return value.__name__
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type, types.MethodType)):
        module = getattr(value, "__module__", None)
        return module if isinstance(module, str) else None
    return None


def vet(value: Any, where: str) -> Any:
    """`value` when the sandbox may hold it; CodeExecutionError naming the module otherwise."""
    module = _defining_module(value)
    if module is None or module == "builtins":
        return value
    reason = sandbox_import_reason(module)
    if reason is not None:
        raise CodeExecutionError(f"{where} reaches module '{module}', which the sandbox refuses: {reason}")
    return value


def guarded_getattr(obj: Any, name: str, default: Any = None, getattr: Any = getattr) -> Any:
    """RestrictedPython's safer_getattr, then the vetting of what it returned."""
    value = safer_getattr(obj, name, default, getattr)
    return vet(value, f"attribute {name!r}")


def guarded_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> Any:
    """abstractruntime's import check, then the vetting of each `from name import x` target."""
    module = _ORIGINAL_IMPORT(name, globals, locals, fromlist, level)
    for item in fromlist or ():
        if isinstance(item, str) and item != "*" and hasattr(module, item):
            vet(getattr(module, item), f"'from {name} import {item}'")
    return module


def install() -> None:
    """Bind the guards where abstractruntime's three tiers look them up (module globals read at call
    time; the installed package is left as it is)."""
    code_executor.safer_getattr = guarded_getattr
    code_executor._sandbox_import = guarded_import
    function_library.safer_getattr = guarded_getattr
    pin_expressions.safer_getattr = guarded_getattr
