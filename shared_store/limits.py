"""Size caps both processes read (the API refuses input over them, the runner output over them).

One place, so the API and the runner can never disagree: ABSTRACTGATEWAY_MAX_INPUT_BYTES (a run's
`input_data`, JSON-encoded; start and schedule answer 413 above it) and
ABSTRACTGATEWAY_MAX_OUTPUT_BYTES (a run's stored output, JSON-encoded; enforced by the runner). Both
default well under the 16 MiB request-body cap: 200 starts with a 5 MB input once grew a db by 9.9 GB.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_MAX_INPUT_BYTES = 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of bytes >= 1, not {raw!r}")
    return int(raw)


def max_input_bytes(env: Mapping[str, str] | None = None) -> int:
    return _bytes(
        os.environ if env is None else env, "ABSTRACTGATEWAY_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES
    )


def max_output_bytes(env: Mapping[str, str] | None = None) -> int:
    return _bytes(
        os.environ if env is None else env, "ABSTRACTGATEWAY_MAX_OUTPUT_BYTES", DEFAULT_MAX_OUTPUT_BYTES
    )
