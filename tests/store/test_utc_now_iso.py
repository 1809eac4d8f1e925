"""utc_now_iso formats the seconds once a second: its text must stay exactly datetime.isoformat()'s
(created_at orders runs as text; clients parse it), whatever the clock says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared_store import codec

# A whole second (isoformat leaves the microseconds out), 1 us, 999,999 us, sub-microsecond nanos
# (truncated, as datetime does), across a second, a day and a year boundary, the epoch.
NANOS = [
    1_796_083_200_000_000_000,
    1_796_083_200_000_001_000,
    1_796_083_200_999_999_999,
    1_796_083_201_000_000_500,
    1_798_761_599_999_999_000,
    1_798_761_600_000_000_000,
    1_798_761_600_123_456_789,
    0,
    1_000,
]


@pytest.mark.parametrize("nanos", NANOS)
def test_same_text_as_datetime_isoformat(monkeypatch: pytest.MonkeyPatch, nanos: int) -> None:
    monkeypatch.setattr(codec.time, "time_ns", lambda: nanos)
    seconds, rest = divmod(nanos, 1_000_000_000)
    expected = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000).isoformat()
    assert codec.utc_now_iso() == expected


def test_the_cached_second_moves_with_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = []
    for nanos in sorted(NANOS):
        monkeypatch.setattr(codec.time, "time_ns", lambda nanos=nanos: nanos)
        texts.append(codec.utc_now_iso())
    assert texts == sorted(texts)  # text order is time order
    assert len(set(texts)) == len(NANOS)


def test_now_is_now() -> None:
    before = datetime.now(UTC)
    text = codec.utc_now_iso()
    after = datetime.now(UTC)
    assert before <= datetime.fromisoformat(text) <= after
