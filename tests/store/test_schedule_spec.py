"""Schedule specs: validation, interval and cron timing across daylight-saving changes, catch-up policy."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from shared_store.schedules import ScheduleInvalid, ScheduleSpec, firings_due

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 28, 12, 0, tzinfo=PARIS).timestamp()


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=PARIS).timestamp()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"interval": "soon"}, "interval"),
        ({"interval": "0s"}, "interval"),
        ({"interval": "-5m"}, "interval"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"start_at": "tomorrow"}, "start_at"),
        ({"interval": "1h", "repeat_until": "2020-01-01T00:00:00Z"}, "repeat_until"),
        ({"interval": "1h", "repeat_count": 0}, "repeat_count"),
        ({"interval": "1h", "repeat_count": True}, "repeat_count"),
        ({"interval": "1h", "cron": "* * * * *"}, "cron"),
        ({"interval": "1h", "catch_up": "most"}, "catch_up"),
        ({"interval": "1h", "overlap": "never"}, "overlap"),
    ],
)
def test_bad_values_name_their_field(request_fields: dict[str, object], field: str) -> None:
    with pytest.raises(ScheduleInvalid) as caught:
        ScheduleSpec.parse(request_fields, now=NOW)
    assert caught.value.field == field


def test_interval_forms() -> None:
    for text, seconds in (("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800), ("0.5s", 0.5)):
        assert ScheduleSpec.parse({"interval": text}, now=NOW).interval_s == seconds


def test_cron_in_a_timezone_across_spring_forward() -> None:
    # 02:30 does not exist in Paris on 2026-03-29 (clocks jump 02:00 -> 03:00): that day fires at 03:00.
    spec = ScheduleSpec.parse({"cron": "30 2 * * *", "timezone": "Europe/Paris"}, now=NOW)
    first = spec.first_fire_at()
    second = spec.next_after(first)
    third = spec.next_after(second)
    assert first == _ts(2026, 3, 29, 3, 0)
    assert second == _ts(2026, 3, 30, 2, 30)
    assert second - first == 23.5 * 3600
    assert third - second == 24 * 3600


def test_cron_in_a_timezone_across_fall_back() -> None:
    # On 2026-10-25 Paris goes 03:00 CEST -> 02:00 CET: a 09:00 daily job stays at 09:00 local (25 h apart).
    start = datetime(2026, 10, 24, 8, 0, tzinfo=PARIS).timestamp()
    spec = ScheduleSpec.parse({"cron": "0 9 * * *", "timezone": "Europe/Paris"}, now=start)
    first = spec.first_fire_at()
    assert datetime.fromtimestamp(first, PARIS).hour == 9
    assert spec.next_after(first) - first == 25 * 3600
    # An hourly job fires at each distinct hour: 02:00 happens twice, an hour apart.
    hourly = ScheduleSpec.parse(
        {"cron": "0 * * * *", "timezone": "Europe/Paris"}, now=_ts(2026, 10, 25, 0, 30)
    )
    times = [hourly.first_fire_at()]
    for _ in range(3):
        times.append(hourly.next_after(times[-1]))
    assert [b - a for a, b in itertools.pairwise(times)] == [3600.0, 3600.0, 3600.0]


def test_firings_due_applies_catch_up_repeat_count_and_until() -> None:
    spec = ScheduleSpec.parse({"interval": "1h", "start_at": "2026-03-28T00:00:00Z"}, now=NOW)
    start = spec.start_at
    late = start + 5.5 * 3600  # six firing times have passed
    assert len(firings_due(spec, start, 0, now=late).fire_times) == 1
    all_spec = ScheduleSpec(**{**spec.__dict__, "catch_up": "all"})
    assert firings_due(all_spec, start, 0, now=late).fire_times == [start + h * 3600 for h in range(6)]
    skip_spec = ScheduleSpec(**{**spec.__dict__, "catch_up": "skip"})
    skipped = firings_due(skip_spec, start, 0, now=late)
    assert (skipped.fire_times, skipped.skipped, skipped.next_fire_at) == ([], 6, start + 6 * 3600)
    on_time = firings_due(skip_spec, start, 0, now=start + 1)
    assert on_time.fire_times == [start]
    counted = ScheduleSpec(**{**all_spec.__dict__, "repeat_count": 4})
    limited = firings_due(counted, start, 2, now=late)
    assert len(limited.fire_times) == 2 and limited.next_fire_at is None
    until = ScheduleSpec(**{**all_spec.__dict__, "repeat_until": start + 2.5 * 3600})
    bounded = firings_due(until, start, 0, now=late)
    assert len(bounded.fire_times) == 3 and bounded.next_fire_at is None
    blocked = firings_due(all_spec, start, 0, now=late, blocked=True)
    assert blocked.fire_times == [] and blocked.skipped == 6 and blocked.next_fire_at == start + 6 * 3600


def test_one_off_schedule_fires_once() -> None:
    spec = ScheduleSpec.parse({"start_at": "now"}, now=NOW)
    due = firings_due(spec, spec.first_fire_at(), 0, now=NOW + 1)
    assert due.fire_times == [NOW] and due.next_fire_at is None


def test_update_keeps_what_is_not_changed() -> None:
    spec = ScheduleSpec.parse({"interval": "1h", "repeat_count": 5, "timezone": "Europe/Paris"}, now=NOW)
    updated = spec.updated({"interval": "15m"}, now=NOW)
    assert (updated.interval_s, updated.repeat_count, updated.timezone) == (900, 5, "Europe/Paris")
    assert spec.updated({"cron": "0 9 * * *"}, now=NOW).interval_s is None
    with pytest.raises(ScheduleInvalid):
        spec.updated({"bundle_id": "x"}, now=NOW)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"interval": "0.0000001s"}, "interval"),
        ({"interval": "99999999999999999999d"}, "interval"),
        ({"start_at": "9999-12-31T00:00:00Z"}, "start_at"),
        ({"interval": "1h", "repeat_until": "9999-12-31T00:00:00Z"}, "repeat_until"),
    ],
)
def test_absurd_timing_is_refused(request_fields: dict[str, object], field: str) -> None:
    with pytest.raises(ScheduleInvalid) as caught:
        ScheduleSpec.parse(request_fields)
    assert caught.value.field == field
