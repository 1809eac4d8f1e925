"""Every store access the in-process servers make, counted per thread, and those made on their event
loop thread recorded (issue 20: every store read leaves the event loop). tests/api/conftest.py fails
any test during which one ran on the loop.

The guard wraps what every store access goes through, on both backends: a Database's connection()
(reads and writes alike) and the change feed's entry points (it keeps a connection of its own).
"""

from __future__ import annotations

import functools
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shared_store.db import Database
from shared_store.feed import ChangeFeed
from shared_store.postgres.database import PgDatabase

LOOP_THREAD = "hypercorn"  # conftest.ServerThread runs its event loop in a thread of this name
GUARDED = (
    (Database, "connection"),
    (PgDatabase, "connection"),
    (ChangeFeed, "poll"),
    (ChangeFeed, "head"),
    (ChangeFeed, "wait"),
)

on_loop: list[str] = []
calls: Counter[str] = Counter()  # guarded calls by thread name, since the session began


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        name = threading.current_thread().name
        calls[name] += 1
        if name == LOOP_THREAD:
            frames = traceback.extract_stack(limit=8)[:-1]
            on_loop.append(
                " <- ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in frames[::-1])
            )
        return method(*args, **kwargs)

    return guarded


@contextmanager
def guarding() -> Iterator[None]:
    originals = [(owner, name, owner.__dict__[name]) for owner, name in GUARDED]
    for owner, name, method in originals:
        setattr(owner, name, _guard(method))
    try:
        yield
    finally:
        for owner, name, method in originals:
            setattr(owner, name, method)
