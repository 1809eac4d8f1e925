"""Runner crashes, restarts, graceful stops and several runners on one db."""

from __future__ import annotations

from collections import Counter

from tests.backends import on_postgres
from tests.runner.conftest import Gateway


def _dense(gateway: Gateway, run_id: str) -> list[int]:
    return [seq for seq, _ in gateway.ledger(run_id)]


def test_sigkill_mid_run_then_restart_completes_with_a_dense_ledger(gateway: Gateway) -> None:
    n = 3000
    run_id = gateway.start("bench-loop", {"n": n})
    first = gateway.runner("first", lease_s=1.0)
    gateway.wait(lambda: gateway.run(run_id)["ledger_len"] > 200, "the run to be well under way")
    first.kill()
    at_kill = gateway.run(run_id)
    assert at_kill["status"] == "running" and at_kill["ledger_len"] < 2 * n + 2, "killed mid-run"

    second = gateway.runner("second", lease_s=1.0)
    done = gateway.wait_status(run_id, "completed", timeout=120)
    seqs = _dense(gateway, run_id)
    assert seqs == list(range(1, len(seqs) + 1)), "no gap, no duplicate seq"
    assert done["ledger_len"] == len(seqs)
    # Each of the n emits completed exactly once, whatever was replayed after the kill.
    completed = Counter(
        r.get("idempotency_key")
        for _, r in gateway.ledger(run_id)
        if r["status"] == "completed" and r.get("idempotency_key")
    )
    assert completed and max(completed.values()) == 1
    if not on_postgres():  # the SQLite file's own check (a PostgreSQL server keeps its own pages)
        assert gateway.db.query_one("PRAGMA integrity_check") == ("ok",)
    assert second.stop() == 0


def test_sigterm_finishes_the_tick_releases_leases_and_exits_zero(gateway: Gateway) -> None:
    run_id = gateway.start("bench-tick", {"n": 150, "delay": 0.01})
    runner = gateway.runner("graceful", lease_s=30.0)
    gateway.wait(lambda: gateway.run(run_id)["ledger_len"] > 4, "the run to make progress")
    assert runner.stop() == 0
    assert gateway.db.query("SELECT run_id FROM runs WHERE lease_owner IS NOT NULL") == []
    assert gateway.db.query_one(
        "SELECT stopped_at IS NOT NULL FROM runners WHERE runner_id = 'graceful'"
    ) == (1,)
    assert [e["event"] for e in runner.events()][-1] == "runner_stopped"
    # With the lease released (not left to expire), another runner continues at once.
    gateway.runner("next", lease_s=30.0)
    gateway.wait_status(run_id, "completed", timeout=120)
    # The terminal state commits first, abstractruntime's closing status record just after it (the
    # SSE hub waits for that record before `done`): wait for it, then the ledger must be dense.
    gateway.wait(
        lambda: len(_dense(gateway, run_id)) == gateway.run(run_id)["ledger_len"],
        "the closing record",
    )
    assert _dense(gateway, run_id) == list(range(1, gateway.run(run_id)["ledger_len"] + 1))


def test_two_runners_share_100_runs_each_completed_exactly_once(gateway: Gateway) -> None:
    runs = [gateway.start("bench-loop", {"n": 20}) for _ in range(100)]
    a, b = gateway.runner("a"), gateway.runner("b")
    gateway.wait(
        lambda: gateway.db.query_one("SELECT count(*) FROM runs WHERE status = 'completed'") == (100,),
        "all 100 runs to complete",
        timeout=180,
    )
    assert a.stop() == 0 and b.stop() == 0
    events = a.events() + b.events()
    started = Counter(e["run_id"] for e in events if e["event"] == "run_started")
    finished = Counter(e["run_id"] for e in events if e["event"] == "run_finished")
    assert set(started) == set(runs) and set(started.values()) == {1}, "each run started once"
    assert set(finished) == set(runs) and set(finished.values()) == {1}, "each run finished once"
    split = [sum(1 for e in r.events() if e["event"] == "run_started") for r in (a, b)]
    assert sum(split) == 100 and min(split) > 0, f"both runners took work: {split}"
    for run_id in runs:
        assert _dense(gateway, run_id) == list(range(1, 2 * 20 + 3)), (
            "one writer: exactly the records of one run"
        )
