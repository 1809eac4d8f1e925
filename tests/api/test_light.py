"""The API process stays light: importing the app loads no abstractruntime / ML stack."""

from __future__ import annotations

import subprocess
import sys


def test_api_imports_no_runtime_or_ml_stack() -> None:
    code = (
        "import sys, api_service.cli, api_service.app, api_service.server; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('abstractruntime', 'abstractcore', 'torch', 'diffusers', 'transformers', 'numpy')); print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_module_imports_cheaply() -> None:
    code = "import sys, api_service.cli; print(sorted(m for m in sys.modules if m.startswith(('starlette', 'hypercorn', 'shared_store'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
