"""The API side stays light: the store modules it uses never pull in abstractruntime."""

from __future__ import annotations

import subprocess
import sys


def test_store_surface_for_the_api_does_not_import_abstractruntime() -> None:
    code = (
        "import sys, shared_store, shared_store.reads, shared_store.inbox, shared_store.runners, "
        "shared_store.feed, shared_store.leases, gateway_cli; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('abstractruntime', 'torch', 'diffusers', 'abstractcore')); print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
