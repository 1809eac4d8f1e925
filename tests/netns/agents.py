"""Small programs the namespace tests run on their hosts (`python -m tests.netns.agents ...`), each
printing one JSON line per event on stdout so the test can follow it. They use the store's own
PostgreSQL functions (shared_store/postgres), as a runner host would."""

from __future__ import annotations

import json
import sys
import time

from shared_store.errors import LeaseLost
from shared_store.postgres import statements as s
from shared_store.postgres.connect import connect
from shared_store.postgres.fence import append_fenced
from shared_store.postgres.leases import claim_runs, reclaim_expired


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def hold(url: str, run_id: str) -> None:
    """Claim `run_id` (a short lease), then hold its row lock in an open transaction (as a runner
    mid-write does) until a line arrives on stdin; then try to finish that write, and after it a
    fresh fenced append with the old lease."""
    conn = connect(url, "agent-hold", tcp_user_timeout=3_000)
    claimed = claim_runs(conn, "runner-a", n=1, lease_s=2.0)
    assert [c.run_id for c in claimed] == [run_id], claimed
    epoch = claimed[0].epoch
    conn.autocommit = False
    conn.execute(s.LOCK_HELD_RUN, {"run_id": run_id, "owner": "runner-a", "epoch": epoch})
    say(event="holding", epoch=epoch)
    sys.stdin.readline()
    began = time.monotonic()
    try:
        append_fenced(conn, run_id, "runner-a", epoch, b"written while cut off")
        conn.commit()
        say(event="in-transaction", outcome="committed")
    except Exception as exc:
        say(event="in-transaction", outcome=type(exc).__name__, seconds=round(time.monotonic() - began, 2))
    finally:
        conn.close()
    fresh = connect(url, "agent-hold-again")
    try:
        seq = append_fenced(fresh, run_id, "runner-a", epoch, b"stale append")
        say(event="stale-append", outcome="accepted", seq=seq)
    except LeaseLost:
        say(event="stale-append", outcome="LeaseLost")
    finally:
        fresh.close()


def take(url: str, run_id: str, deadline_s: str) -> None:
    """Take `run_id` over once its lease expired and its holder's lock is gone (bounded)."""
    conn = connect(url, "agent-take")
    began = time.monotonic()
    passes = 0
    while time.monotonic() - began < float(deadline_s):
        passes += 1
        reclaim_expired(conn)
        claimed = claim_runs(conn, "runner-b", n=1, lease_s=60.0)
        if claimed:
            epoch = claimed[0].epoch
            say(event="took", run_id=claimed[0].run_id, epoch=epoch, passes=passes,
                seconds=round(time.monotonic() - began, 2))  # fmt: skip
            say(event="appended", seq=append_fenced(conn, run_id, "runner-b", epoch, b"new holder"))
            return
        time.sleep(0.1)
    say(event="gave-up", passes=passes)


def main(argv: list[str]) -> None:
    if argv[0] == "hold":
        hold(*argv[1:3])
    elif argv[0] == "take":
        take(*argv[1:4])
    else:
        raise SystemExit(f"unknown agent {argv[0]!r} (hold, take)")


if __name__ == "__main__":
    main(sys.argv[1:])
