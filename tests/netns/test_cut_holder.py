"""A runner host cut off the network while it holds a run (its lease and, mid-write, the run row's
lock): another runner host takes the run over once the lease expired and the server ended the
cut-off session (idle_in_transaction_session_timeout); when the link returns, the first runner's
pending write fails and a fresh append with its old lease is refused (LeaseLost). Real PostgreSQL on
host `db`, the store's own claim / takeover / fence functions on hosts `h1` and `h2`."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg

from shared_store.postgres.migrate import migrate
from tests.netns.harness import Netns
from tests.netns.test_netns_smoke import PG_PORT, require_netns
from tests.pg.fixtures import require_postgres
from tests.pg.server import PgServer

REPO = Path(__file__).resolve().parents[2]
AGENTS = [sys.executable, "-m", "tests.netns.agents"]


def _events(process: subprocess.Popen[str]) -> queue.Queue[dict[str, Any]]:
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            events.put(json.loads(line))

    threading.Thread(target=pump, daemon=True).start()
    return events


def test_a_cut_off_holder_is_taken_over_and_its_writes_change_nothing() -> None:
    require_postgres()
    require_netns()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with Netns() as net:
        db, h1, h2 = net.add_host("db"), net.add_host("h1"), net.add_host("h2")
        server = PgServer(
            host=db.ip,
            port=PG_PORT,
            wrap=net.wrap(db),
            allow_cidr=str(net.subnet),
            settings={"idle_in_transaction_session_timeout": "3s"},
        )
        try:
            server.start()
            # The test itself talks to the server through its unix socket (a file: no network).
            local = f"host={server.sockdir} port={PG_PORT} user=postgres"
            with psycopg.connect(f"{local} dbname=postgres", autocommit=True) as conn:
                conn.execute("CREATE DATABASE gw")
            migrate(f"{local} dbname=gw")
            with psycopg.connect(f"{local} dbname=gw", autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at, due_at) "
                    "VALUES ('r1', 'b@1:f', 'running', 'now', 'now', 0.0)"
                )
            url = f"postgresql://postgres@{db.ip}:{PG_PORT}/gw"

            holder = net.interactive(h1, [*AGENTS, "hold", url, "r1"], env=env)
            events = _events(holder)
            assert events.get(timeout=60) == {"event": "holding", "epoch": 1}
            net.cut(h1)

            taker = net.run(h2, [*AGENTS, "take", url, "r1", "60"], env=env, timeout=120)
            taken = [json.loads(line) for line in taker.stdout.splitlines()]
            assert [e["event"] for e in taken] == ["took", "appended"], taker.stdout + taker.stderr
            assert (taken[0]["epoch"], taken[1]["seq"]) == (2, 1)

            net.restore(h1)
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()
            pending = events.get(timeout=60)
            assert pending["event"] == "in-transaction" and pending["outcome"] != "committed", pending
            assert events.get(timeout=60) == {"event": "stale-append", "outcome": "LeaseLost"}
            assert holder.wait(30) == 0

            with psycopg.connect(f"{local} dbname=gw") as conn:
                assert conn.execute("SELECT seq, record FROM ledger").fetchall() == [(1, b"new holder")]
                assert conn.execute("SELECT lease_owner, lease_epoch, ledger_len FROM runs").fetchall() == [
                    ("runner-b", 2, 1)
                ]
            print(
                f"takeover after {taken[0]['seconds']} s ({taken[0]['passes']} passes); cut-off write: {pending}"
            )
        finally:
            server.stop()
