"""A runner stand-in for the lease tests, run as a separate process: `python -m tests.store.lease_worker`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from abstractruntime.core.models import StepRecord

from shared_store import LeaseHolder, LeaseLost, open_database
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore


def claim_all(holder: LeaseHolder, batch: int) -> None:
    """Claim until the queue stays empty; print every (run_id, epoch) claimed."""
    claimed: list[list[object]] = []
    empty = 0
    while empty < 3:
        leases = holder.claim(batch)
        empty = 0 if leases else empty + 1
        claimed.extend([lease.run_id, lease.epoch] for lease in leases)
    print(json.dumps(claimed))


def write_marker(holder: LeaseHolder, run_id: str, marker: str) -> dict[str, str]:
    """Save the run with a marker and append one ledger record; report what happened to each."""
    runs, ledger = SqliteRunStore(holder.db, fence=holder), SqliteLedgerStore(holder.db, fence=holder)
    outcome: dict[str, str] = {}
    run = runs.load(run_id)
    assert run is not None
    run.vars["writer"] = marker
    for name, write in (
        ("save", lambda: runs.save(run)),
        ("append", lambda: ledger.append(StepRecord.start(run=run, node_id=marker, effect=None))),
    ):
        try:
            write()
            outcome[name] = "ok"
        except LeaseLost as exc:
            outcome[name] = f"LeaseLost: {exc}"
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["claim-all", "hold", "takeover"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--lease-s", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    args = parser.parse_args()
    db = open_database(args.db)
    holder = LeaseHolder(db, args.owner, lease_s=args.lease_s, clock=lambda: time.time() + args.clock_offset)
    if args.action == "claim-all":
        print("ready", flush=True)
        sys.stdin.readline()  # start together with the other workers
        claim_all(holder, args.batch)
        return
    leases = holder.claim(1)
    if args.action == "takeover":
        # The lease to take over expires on the backend's clock: the database's on PostgreSQL, which
        # --clock-offset does not move. Claim until it has (bounded).
        deadline = time.monotonic() + 30
        while not leases and time.monotonic() < deadline:
            time.sleep(0.05)
            leases = holder.claim(1)
    print(json.dumps({"claimed": [[lease.run_id, lease.epoch] for lease in leases]}), flush=True)
    if not leases:
        return
    if args.action == "hold":
        sys.stdin.readline()  # the test says when: after another runner took the lease over
    print(json.dumps(write_marker(holder, leases[0].run_id, args.owner)), flush=True)


if __name__ == "__main__":
    main()
