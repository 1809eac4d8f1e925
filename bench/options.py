"""The command-line options every benchmark shares: --quick and --flows-dir."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def default_flows_dir() -> Path:
    """ABSTRACTGATEWAY_FLOWS_DIR when set, else the repository's own samples (built if stale)."""
    env = os.environ.get("ABSTRACTGATEWAY_FLOWS_DIR")
    if env:
        return Path(env)
    from abstractgateway.sample_flows import ensure_built

    return ensure_built()


def bench_parser(doc: str, *, quick_help: str) -> argparse.ArgumentParser:
    """A parser described by the bench's docstring, with --quick and --flows-dir."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--flows-dir", type=Path, default=default_flows_dir(), help="sample .flow bundles")
    return parser
