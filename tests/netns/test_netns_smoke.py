"""The namespace harness, for real: PostgreSQL on host `db`, a client on host `h1`; cutting h1's link
makes its connection attempts fail, restoring it makes them work again, the root namespace cannot
reach the test subnet, and nothing is left behind (also what a killed session left)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from tests.netns.harness import Netns, owner_prefix, unavailable_reason
from tests.pg.fixtures import require_postgres, skip_unless_ci
from tests.pg.server import PgServer

PG_PORT = 5432


def require_netns() -> None:
    """Skip saying why namespaces cannot be made here; under CI (root, iproute2 installed) fail."""
    reason = unavailable_reason()
    if reason is not None:
        skip_unless_ci("network namespaces", reason)


def _leftovers(prefix: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    left = [n for n in names.split() if n.startswith(prefix)]
    left += [line.split(": ")[1] for line in links.splitlines() if line.split(": ")[1].startswith(prefix)]
    routes = subprocess.run(
        ["ip", "route", "show", "type", "blackhole"], capture_output=True, text=True, check=True
    ).stdout
    left += [r for r in routes.splitlines() if f"metric {int(prefix[3:-1], 16)}" in r]
    return left


def test_postgres_across_namespaces_cut_and_restore() -> None:
    require_postgres()
    require_netns()
    net = Netns()
    with net:
        db, h1 = net.add_host("db"), net.add_host("h1")
        server = PgServer(host=db.ip, port=PG_PORT, wrap=net.wrap(db), allow_cidr=str(net.subnet))
        try:
            server.start()
            psql = [str(server.bindir / "psql"), "-X", "-h", db.ip, "-p", str(PG_PORT), "-U", "postgres"]
            probe = [*psql, "-d", "postgres", "-Atc", "SELECT inet_server_addr()"]
            env = {**os.environ, "PGCONNECT_TIMEOUT": "2"}

            first = net.run(h1, probe, env=env)
            assert (first.returncode, first.stdout.strip()) == (0, db.ip), first.stderr

            net.cut(h1)
            cut = [net.run(h1, probe, env=env) for _ in range(3)]
            assert [r.returncode for r in cut] == [2, 2, 2], [r.stderr for r in cut]
            # A lost packet times out; a failed neighbour lookup says "No route to host".
            failures = [r.stderr.lower() for r in cut]
            assert all(("timeout" in f or "no route" in f or "unreachable" in f) for f in failures), failures

            net.restore(h1)
            results = []
            for _ in range(40):  # the link is usable again within moments; bounded at ~40 tries
                results.append(net.run(h1, probe, env=env))
                if results[-1].returncode == 0:
                    break
                time.sleep(0.25)
            assert results[-1].returncode == 0 and results[-1].stdout.strip() == db.ip, results[-1].stderr

            # The root namespace has no way into the test subnet (the blackhole route).
            with socket.socket() as sock, pytest.raises(OSError):
                sock.settimeout(2)
                sock.connect((db.ip, PG_PORT))
            from_root = subprocess.run(
                probe, capture_output=True, text=True, env=env, timeout=30, check=False
            )
            assert from_root.returncode != 0
        finally:
            server.stop()
    assert _leftovers(net.prefix) == []


def test_a_dead_sessions_leftovers_are_removed_at_start() -> None:
    require_netns()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = owner_prefix(dead.pid)
    subprocess.run(["ip", "netns", "add", f"{stale}-old"], check=True)
    subprocess.run(["ip", "link", "add", f"{stale}br", "type", "bridge"], check=True)
    try:
        with Netns():
            assert _leftovers(stale) == []
    finally:
        subprocess.run(["ip", "netns", "del", f"{stale}-old"], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", f"{stale}br"], capture_output=True, check=False)
