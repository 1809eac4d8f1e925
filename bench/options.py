"""The command-line options every benchmark shares: --quick and --flows-dir."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def default_flows_dir() -> Path:
    env = os.environ.get("ABSTRACTGATEWAY_FLOWS_DIR")
    return Path(env) if env else REPO.parent / "shared" / "flows"


def bench_parser(doc: str, *, quick_help: str) -> argparse.ArgumentParser:
    """A parser described by the bench's docstring, with --quick and --flows-dir."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--flows-dir", type=Path, default=default_flows_dir(), help="sample .flow bundles")
    return parser
