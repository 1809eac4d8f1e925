"""Scheduled runs fired by real runner processes: counts, limits, cancel, update, several runners, restarts."""

from __future__ import annotations

import time

from shared_store.bundles import resolve_workflow
from shared_store.inbox import append_command
from shared_store.schedules import ScheduleSpec, create_schedule, get_schedule, iso
from tests.runner.conftest import Gateway


def _schedule(gateway: Gateway, bundle: str = "bench-echo", **request: object) -> str:
    spec = ScheduleSpec.parse(request)
    resolved = resolve_workflow(gateway.db, bundle_id=bundle)
    share = bool(request.get("share_context", False))
    return create_schedule(
        gateway.db, resolved=resolved, spec=spec, input_data={"message": "tick"}, share_context=share
    )


def _children(gateway: Gateway, parent: str) -> list[tuple[str, str, str | None]]:
    rows = gateway.db.query(
        "SELECT run_id, status, session_id FROM runs WHERE parent_run_id = ? ORDER BY created_at", (parent,)
    )
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


def test_interval_times_three_fires_exactly_three_children(gateway: Gateway) -> None:
    parent = _schedule(gateway, interval="0.3s", repeat_count=3, share_context=True)
    gateway.runner()
    gateway.wait_status(parent, "completed")
    children = _children(gateway, parent)
    assert len(children) == 3
    for child, _, session in children:
        assert gateway.wait_status(child, "completed")["output"]["result"] == "tick"
        assert session == parent, "share_context: children share one session"
    schedule = get_schedule(gateway.db, parent)
    assert schedule is not None and (schedule.status, schedule.fired_count) == ("finished", 3)


def test_start_at_in_the_future_waits_then_fires_once(gateway: Gateway) -> None:
    gateway.runner()
    warm = gateway.start("bench-echo", {"message": "warm"})
    gateway.wait_status(warm, "completed")  # the runner is up and serving: timing below is its own
    start_at = time.time() + 2.0
    parent = _schedule(gateway, start_at=iso(start_at))
    gateway.wait(lambda: gateway.run(parent)["status"] != "queued", "the parent to start")
    assert gateway.run(parent)["status"] == "waiting" or time.time() >= start_at
    if time.time() < start_at:
        assert _children(gateway, parent) == [], "nothing fires before start_at"
    gateway.wait_status(parent, "completed")
    children = _children(gateway, parent)
    assert len(children) == 1 and children[0][2] == children[0][0], (
        "no shared context: the child is its own session (its run id, as the original)"
    )
    created = gateway.db.query_one("SELECT created_at FROM runs WHERE run_id = ?", (children[0][0],))[0]
    assert created >= iso(start_at)


def test_repeat_until_stops_the_schedule(gateway: Gateway) -> None:
    parent = _schedule(gateway, interval="0.2s", repeat_until=iso(time.time() + 1.0))
    gateway.runner()
    gateway.wait_status(parent, "completed", timeout=30)
    schedule = get_schedule(gateway.db, parent)
    assert schedule is not None and schedule.status == "finished"
    assert schedule.last_fired_at is not None and schedule.last_fired_at <= schedule.spec.repeat_until
    assert 1 <= len(_children(gateway, parent)) <= 6


def test_cancel_stops_firings_and_update_schedule_takes_effect(gateway: Gateway) -> None:
    parent = _schedule(gateway, interval="1h")
    gateway.runner()
    gateway.wait(lambda: len(_children(gateway, parent)) == 1, "the first firing")
    append_command(
        gateway.db, command_id="u1", run_id=parent, type="update_schedule", payload={"interval": "0.2s"}
    )
    gateway.wait(lambda: len(_children(gateway, parent)) >= 3, "firings at the new interval")
    assert gateway.command("u1") == ("applied", None)
    append_command(
        gateway.db, command_id="bad", run_id=parent, type="update_schedule", payload={"interval": "soon"}
    )
    append_command(gateway.db, command_id="c1", run_id=parent, type="cancel", payload={})
    gateway.wait_status(parent, "cancelled")
    assert gateway.command("bad")[0] == "rejected" and "interval" in str(gateway.command("bad")[1])
    fired = len(_children(gateway, parent))
    schedule = get_schedule(gateway.db, parent)
    assert schedule is not None and schedule.status == "cancelled" and schedule.fired_count == fired
    # Another schedule firing meanwhile shows the runner kept looking; the cancelled one fired no more.
    other = _schedule(gateway, interval="0.2s", repeat_count=2)
    gateway.wait_status(other, "completed")
    assert len(_children(gateway, parent)) == fired


def test_two_runners_never_double_a_firing(gateway: Gateway) -> None:
    parents = [_schedule(gateway, interval="0.1s", repeat_count=5, overlap="allow") for _ in range(10)]
    gateway.runner("a", lease_s=2.0)
    gateway.runner("b", lease_s=2.0)
    for parent in parents:
        gateway.wait_status(parent, "completed", timeout=60)
    for parent in parents:
        assert len(_children(gateway, parent)) == 5
        assert get_schedule(gateway.db, parent).fired_count == 5


def test_catch_up_policy_for_firings_missed_while_no_runner_was_up(gateway: Gateway) -> None:
    # Hourly schedules whose start was 5.5 h ago: six firings passed with no runner up.
    start_at = iso(time.time() - 5.5 * 3600)
    parents = {
        policy: _schedule(gateway, interval="1h", start_at=start_at, catch_up=policy, overlap="allow")
        for policy in ("skip", "one", "all")
    }
    gateway.runner()
    for parent in parents.values():
        gateway.wait(
            lambda parent=parent: get_schedule(gateway.db, parent).next_fire_at > time.time(), "a pass"
        )
    expected = {"skip": (0, 6), "one": (1, 5), "all": (6, 0)}
    for policy, parent in parents.items():
        schedule = get_schedule(gateway.db, parent)
        assert (len(_children(gateway, parent)), schedule.skipped_count) == expected[policy], policy
        assert schedule.fired_count == expected[policy][0]


def test_a_killed_runner_neither_loses_nor_doubles_a_firing(gateway: Gateway) -> None:
    parent = _schedule(gateway, interval="1h")
    first = gateway.runner("first", lease_s=1.0)
    gateway.wait(lambda: len(_children(gateway, parent)) == 1, "the first firing")
    first.kill()
    second = gateway.runner("second", lease_s=1.0)
    other = _schedule(gateway, interval="1h", repeat_count=1)
    gateway.wait_status(other, "completed")  # the restarted runner is serving
    gateway.wait(lambda: gateway.db.query_one(
        "SELECT lease_owner FROM runs WHERE run_id = ?", (parent,)) == (None,), "the parent to be free")  # fmt: skip
    assert len(_children(gateway, parent)) == 1
    schedule = get_schedule(gateway.db, parent)
    assert schedule is not None and schedule.fired_count == 1 and schedule.next_fire_at > time.time()
    assert second.stop() == 0
