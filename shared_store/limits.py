"""Size caps both processes read (the API refuses input over them, the runner output over them).

One place, so the API and the runner can never disagree: ABSTRACTGATEWAY_MAX_INPUT_BYTES (a run's
`input_data`, JSON-encoded; start and schedule answer 413 above it) and
ABSTRACTGATEWAY_MAX_OUTPUT_BYTES (a run's output, one node's output, one ledger record, JSON-encoded;
the runner's stores refuse them and the run fails). Both
default well under the 16 MiB request-body cap: 200 starts with a 5 MB input once grew a db by 9.9 GB.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .codec import encode
from .settings import SharedSettings, read_one

DEFAULT_MAX_INPUT_BYTES: int = SharedSettings.max_input_bytes
DEFAULT_MAX_OUTPUT_BYTES: int = SharedSettings.max_output_bytes


def max_input_bytes(env: Mapping[str, str] | None = None) -> int:
    """ABSTRACTGATEWAY_MAX_INPUT_BYTES (declared in shared_store/settings.py; SettingsError if bad)."""
    value: int = read_one(SharedSettings, "max_input_bytes", env)
    return value


def max_output_bytes(env: Mapping[str, str] | None = None) -> int:
    """ABSTRACTGATEWAY_MAX_OUTPUT_BYTES (declared in shared_store/settings.py; SettingsError if bad)."""
    value: int = read_one(SharedSettings, "max_output_bytes", env)
    return value


class OutputTooLarge(Exception):
    """A value the runner was about to store is over ABSTRACTGATEWAY_MAX_OUTPUT_BYTES.

    Raised by the run and ledger stores before anything is written; the runner fails the run with
    this message. Not a StoreError (the db is fine) and not a ValueError (a command applying it is
    not refused: its run fails)."""

    def __init__(self, what: str, size: int, cap: int) -> None:
        super().__init__(
            f"{what} is {size} bytes (JSON), over ABSTRACTGATEWAY_MAX_OUTPUT_BYTES={cap}: not stored"
        )
        self.size = size
        self.cap = cap


def check_output(what: str, value: Any, cap: int | None) -> None:
    """Raise OutputTooLarge when value's JSON is longer than cap (None: no cap)."""
    if cap is None:
        return
    size = len(encode(value))
    if size > cap:
        raise OutputTooLarge(what, size, cap)
