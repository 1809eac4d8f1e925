"""The API side stays light: the store modules it uses never pull in abstractruntime."""

from __future__ import annotations

import os
import subprocess
import sys


def test_store_surface_for_the_api_does_not_import_abstractruntime() -> None:
    code = (
        "import sys, shared_store, shared_store.reads, shared_store.inbox, shared_store.runners, "
        "shared_store.feed, shared_store.leases, abstractgateway.cli; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('abstractruntime', 'torch', 'diffusers', 'abstractcore')); print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_api_app_and_the_config_command_import_no_ml_stack() -> None:
    """The API process (its app, the LLM endpoint probe, capability defaults, VisualFlow import) and
    `abstractgateway config` load neither the runtime nor abstractcore nor any ML package."""
    code = (
        "import sys, api_service.app, api_service.cli, api_service.llm_probe, abstractgateway.config_cli, "
        "shared_store.capability_defaults, shared_store.visualflow_files; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'abstractruntime', 'abstractcore', "
        "'torch', 'diffusers', 'transformers', 'numpy', 'pandas', 'vllm'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_loads_prometheus_client_and_urllib_only_when_used() -> None:
    """One serve process counts its metrics in plain Python and imports prometheus_client at the first
    scrape; the LLM endpoint probe imports urllib.request at its first probe (together ~1.5 MB of an
    idle serve's RSS). A scrape then works, and loads it."""
    code = (
        "import sys, tempfile, pathlib; from api_service import app, cli, metrics; "
        "from shared_store import Database, migrate; "
        "print(sorted({'prometheus_client', 'urllib.request'} & set(sys.modules))); "
        "db = Database(pathlib.Path(tempfile.mkdtemp()) / 'g.db'); migrate(db); "
        "body, kind = metrics.exposition(db); "
        "print(b'abstractgateway_http_requests_total' in body, b'process_cpu_seconds_total' in body, "
        "'prometheus_client' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split("\n")[:2] == ["[]", "True True True"], out.stdout + out.stderr
