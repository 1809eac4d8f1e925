"""The HTTP API process (Starlette under Hypercorn): appends and reads only.

structlog imports rich (for pretty console tracebacks: ~50 modules, pygments among them) and greenlet
(for its deprecated greenlet-local context) whenever they are installed — rich comes with typer in the
media profile, greenlet with playwright. The API renders JSON lines and keeps its context in
contextvars, so it uses neither: structlog is imported here, first, with both hidden, and falls back
as it does where they are not installed (serve's idle RSS 50.9 -> 46.8 MB, measured). Both stay
importable afterwards for anything that does want them.
"""

from __future__ import annotations

import sys


def _import_structlog_lean() -> None:
    if "structlog" in sys.modules:
        return
    hidden = [name for name in ("rich", "greenlet") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


_import_structlog_lean()
