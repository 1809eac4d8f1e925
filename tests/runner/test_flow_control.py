"""Flow control with real runner processes: labels, concurrency keys, priorities, rate limits, fairness."""

from __future__ import annotations

import itertools
import random
import time
from datetime import datetime

from shared_store import run_views
from shared_store.flow_control import FlowRequest, FlowSettings, live_labels, unmet_requirements
from shared_store.runners import live_runners

from .conftest import Gateway, RunnerProcess

TERMINAL = ("completed", "failed", "cancelled")


def flow(**fields: object) -> FlowSettings:
    return FlowSettings.resolve(FlowRequest(**fields), {})  # type: ignore[arg-type]


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def first_started(gateway: Gateway, run_id: str) -> float:
    return ts(gateway.ledger(run_id)[0][1]["started_at"])


def span(gateway: Gateway, run_id: str) -> tuple[float, float]:
    """From the first record's start to the last record's end: when the run was doing work."""
    records = [record for _, record in gateway.ledger(run_id)]
    return ts(records[0]["started_at"]), max(ts(r.get("ended_at") or r["started_at"]) for r in records)


def all_finished(gateway: Gateway, run_ids: list[str]) -> bool:
    if not run_ids:  # `IN ()` is SQLite's alone
        return True
    placeholders = ",".join("?" * len(run_ids))
    row = gateway.db.query_one(
        f"SELECT count(*) FROM runs WHERE run_id IN ({placeholders}) AND status IN ('completed', 'failed', 'cancelled')",
        run_ids,
    )
    return row is not None and row[0] == len(run_ids)


def claimed_by(runner_log: list[dict[str, object]]) -> set[str]:
    return {str(e["run_id"]) for e in runner_log if e.get("event") == "claimed"}


def warm_up(gateway: Gateway, runners: list[RunnerProcess]) -> None:
    """Until each runner has finished a run: a runner's first run pays its imports (seconds here)."""
    warm: list[str] = []

    def all_warm() -> bool:
        if len(warm) < 40 and all_finished(gateway, warm):
            warm.extend(gateway.start("bench-echo", {"message": "warm-up"}) for _ in range(4))
        return all(any(e.get("event") == "run_finished" for e in r.events()) for r in runners)

    gateway.wait(all_warm, "each runner to finish a warm-up run", timeout=120)


def test_a_gpu_run_is_never_claimed_by_a_runner_without_the_label(gateway: Gateway) -> None:
    cpu = gateway.runner("cpu")
    gpu_runs = [
        gateway.start("bench-echo", {"message": f"g{i}"}, flow=flow(requires=["gpu"])) for i in range(3)
    ]
    plain = [gateway.start("bench-echo", {"message": f"p{i}"}) for i in range(3)]
    for run_id in plain:
        assert gateway.wait_status(run_id, *TERMINAL)["status"] == "completed"
    # The cpu runner is alive and idle, the gpu runs are due: they stay queued, and say why.
    gateway.wait(lambda: len(live_runners(gateway.db, within_s=30)) == 1, "the cpu runner's heartbeat")
    time.sleep(0.5)
    for run_id in gpu_runs:
        assert gateway.run(run_id)["status"] == "queued"
        view = run_views.run_view(gateway.db, run_id)
        assert view is not None and view["requires"] == ["gpu"]
        assert view["blocked"]["reason"] == "no_runner_with_labels", view["blocked"]
    labels = live_labels(live_runners(gateway.db, within_s=30))
    assert any("['gpu']" in p and "3 run(s)" in p for p in unmet_requirements(gateway.db, labels))

    gateway.runner("gpu", ABSTRACTGATEWAY_RUNNER_LABELS="gpu,region=eu")
    for run_id in gpu_runs:
        assert gateway.wait_status(run_id, *TERMINAL)["status"] == "completed"
        assert run_views.run_view(gateway.db, run_id)["blocked"] is None  # type: ignore[index]
    assert cpu.stop() == 0
    cpu_claims = claimed_by(cpu.events())
    assert set(plain) <= cpu_claims, "the cpu runner's claims are logged"
    assert not cpu_claims & set(gpu_runs), "a run requiring gpu was claimed by a runner without it"


def test_fifty_runs_on_a_key_of_max_two_never_run_more_than_two_at_once(gateway: Gateway) -> None:
    runs = [gateway.start("bench-loop", {"n": 20, "tenant": "acme"}, flow=key_for("acme")) for _ in range(50)]
    for i in range(3):
        gateway.runner(f"r{i}")
    gateway.wait(lambda: all_finished(gateway, runs), "all 50 runs to finish", timeout=600)
    assert {gateway.run(r)["status"] for r in runs} == {"completed"}
    spans = sorted(span(gateway, r) for r in runs)
    # Sweep the start/end events: how many runs were doing work at once.
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak <= 2, f"{peak} runs of the key ran at once"
    # Every slot went back: nothing of the key holds one or waits for one.
    row = gateway.db.query_one("SELECT sum(slot), sum(hold) FROM runs WHERE concurrency_key = 'tenant:acme'")
    assert row == (0, 0)


def key_for(tenant: str) -> FlowSettings:
    return FlowSettings.resolve(
        FlowRequest(concurrency_key="tenant:{input.tenant}", max_concurrent=2), {"tenant": tenant}
    )


def test_claims_take_higher_priority_first(gateway: Gateway) -> None:
    priorities = [p for p in range(1, 6) for _ in range(3)]
    random.Random(5).shuffle(priorities)
    runs = {gateway.start("bench-echo", {"message": str(p)}, flow=flow(priority=p)): p for p in priorities}
    gateway.runner("r1")  # one runner, one worker: runs are done in claim order
    gateway.wait(lambda: all_finished(gateway, list(runs)), "all runs to finish")
    order = sorted(runs, key=lambda r: first_started(gateway, r))
    seen = [runs[r] for r in order]
    assert seen == sorted(priorities, reverse=True), seen


def test_a_rate_limit_of_five_per_second_holds_over_a_burst_of_two_hundred_starts(gateway: Gateway) -> None:
    limited = flow(concurrency_key="provider:quota", rate_limit=5, rate_window_s=1.0)
    warm_up(gateway, [gateway.runner("r1"), gateway.runner("r2")])
    runs: list[str] = []
    burst_start = time.monotonic()
    for i in range(200):  # 200 starts spread over a 10 s burst
        runs.append(gateway.start("bench-echo", {"message": str(i)}, flow=limited))
        time.sleep(max(0.0, burst_start + (i + 1) * 0.05 - time.monotonic()))
    # While the burst is being worked off, later runs wait on the limit with the time they are due.
    waiting = [run_views.run_view(gateway.db, r) for r in runs[-20:]]
    blocked = [v["blocked"] for v in waiting if v and v["blocked"]]
    assert blocked and all(b["reason"] == "rate_limit" and b["until"] for b in blocked), blocked
    gateway.wait(lambda: all_finished(gateway, runs), "all 200 runs to finish", timeout=600)
    assert {gateway.run(r)["status"] for r in runs} == {"completed"}
    placeholders = ",".join("?" * len(runs))
    begun = sorted(
        float(t)
        for (t,) in gateway.db.query(f"SELECT begun_at FROM runs WHERE run_id IN ({placeholders})", runs)
    )
    assert len(begun) == 200
    # Count-based: no 6 starts within one second, anywhere in the burst ...
    crowded = [i for i in range(len(begun) - 5) if begun[i + 5] - begun[i] < 1.0]
    assert not crowded, [begun[i : i + 6] for i in crowded[:3]]
    # ... and each run did its first step only after its start was admitted.
    for run_id in runs:
        (admitted,) = gateway.db.query_one("SELECT begun_at FROM runs WHERE run_id = ?", (run_id,))  # type: ignore[misc]
        assert first_started(gateway, run_id) >= admitted - 0.001


def test_two_keys_with_a_hundred_runs_each_finish_interleaved(gateway: Gateway) -> None:
    a = [
        gateway.start("bench-echo", {"message": "a"}, flow=flow(concurrency_key="tenant:a"))
        for _ in range(100)
    ]
    b = [
        gateway.start("bench-echo", {"message": "b"}, flow=flow(concurrency_key="tenant:b"))
        for _ in range(100)
    ]
    gateway.runner("r1")
    gateway.wait(lambda: all_finished(gateway, a + b), "all 200 runs to finish", timeout=600)
    keys = {r: "a" for r in a} | {r: "b" for r in b}
    order = [keys[r] for r in sorted(a + b, key=lambda r: span(gateway, r)[1])]
    # b enqueued after all of a, yet half of the first hundred to finish are b's.
    first_half = order[:100]
    assert 40 <= first_half.count("b") <= 60, "".join(order)
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert switches >= 100, "".join(order)


def test_cancel_oldest_and_cancel_newest_make_room_through_cancels(gateway: Gateway) -> None:
    gateway.runner("r1")
    asking = flow(concurrency_key="chat", max_concurrent=1, count_waiting=True)
    oldest = gateway.start("bench-ask", flow=asking)
    assert (
        gateway.wait_status(oldest, "waiting")["status"] == "waiting"
    )  # waiting, and (counted) holding the slot
    newer = gateway.start(
        "bench-echo", {"message": "x"}, flow=flow(concurrency_key="chat", overflow="cancel_oldest")
    )
    assert gateway.wait_status(oldest, *TERMINAL)["status"] == "cancelled"
    assert gateway.wait_status(newer, *TERMINAL)["status"] == "completed"

    holder = gateway.start(
        "bench-ask", flow=flow(concurrency_key="chat2", max_concurrent=1, count_waiting=True)
    )
    gateway.wait_status(holder, "waiting")
    newest = gateway.start(
        "bench-echo", {"message": "y"}, flow=flow(concurrency_key="chat2", overflow="cancel_newest")
    )
    ended = gateway.wait_status(newest, *TERMINAL)
    assert ended["status"] == "cancelled" and ended["output"] is None
    assert gateway.run(holder)["status"] == "waiting", "the run holding the slot goes on"
