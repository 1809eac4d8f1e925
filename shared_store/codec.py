"""msgspec JSON for what the store keeps. Free of abstractruntime, so the API can use it."""

from __future__ import annotations

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


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC text: how every time shown to clients (and abstractruntime) is written."""
    return datetime.now(UTC).isoformat()
