"""msgspec JSON for what the store keeps. Free of abstractruntime, so the API can use it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    """JSON bytes of a value (dataclasses, str-enums, tuples and sets included)."""
    return _encoder.encode(value)


def decode(data: bytes | str) -> Any:
    """Plain Python values (dicts, lists, str, numbers) from JSON bytes."""
    return _decoder.decode(data)


# (whole second, its text up to the seconds): datetime.isoformat() formats through printf, ~6,800
# instructions a call (callgrind); a start wrote two (created_at, its audit line). Replaced whole,
# never mutated, so a thread reads either the old pair or the new one.
_second: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC text: how every time shown to clients (and abstractruntime) is written.
    Exactly `datetime.now(UTC).isoformat()` (microseconds, left out when 0), the seconds' text
    formatted once a second."""
    global _second
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached = _second
    if cached[0] != seconds:
        cached = _second = (seconds, datetime.fromtimestamp(seconds, UTC).isoformat()[:19])
    micros = nanos // 1000
    return f"{cached[1]}.{micros:06d}+00:00" if micros else f"{cached[1]}+00:00"
