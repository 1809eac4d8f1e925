"""Waiting for a condition in the deploy tests (containers and services come up in their own time)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], object], timeout_s: float = 60.0, every_s: float = 0.2) -> bool:
    """True once `check()` is truthy, False if it is not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return False
