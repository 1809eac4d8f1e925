"""Several hosts on one machine: Linux network namespaces on a bridge, for tests that need a real
network between processes (a database host, API hosts, runner hosts) and a link to cut.

Layout: one bridge in the root namespace (no address on it), one namespace per host, joined to the
bridge by a veth pair; hosts get 10.A.B.1, .2, ... in a /24 chosen per test session. A blackhole route
for that /24 in the root namespace, added before any host exists, keeps every packet for the test
subnet off the machine's real network (without it one connection attempt left by the default route,
measured). `cut(host)` sets the host's bridge-side veth down; `restore(host)` sets it up again (this
kernel has no netem: a cut link is a downed link); `kill_host(host)` SIGKILLs every process on it.

Teardown always happens: names carry the session's pid (gwt<pid hex>...), `close()` removes them,
a watchdog process removes them when the test process dies without closing (SIGKILL, a CI timeout),
and every new harness first removes what sessions whose pid is gone left behind. Stdlib only: the
watchdog runs this file by path (`python harness.py cleanup PREFIX`).

Needs root (CAP_NET_ADMIN) and iproute2's `ip`; `unavailable_reason()` says why not otherwise."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PREFIX_ROOT = "gwt"  # every name this harness makes starts with it (then the owner's pid in hex)
# Test subnets come from 10.200.0.0/13's /24s (picked by pid, skipped when a route already uses one).
SUBNET_POOL = ipaddress.ip_network("10.200.0.0/13")
COMMAND_TIMEOUT_S = 30.0

_WATCHDOG = """
import subprocess, sys
sys.stdin.buffer.read()  # EOF: the test process ended, however it ended
subprocess.run([sys.executable, sys.argv[1], "cleanup", sys.argv[2]], timeout=120, check=False)
"""


def _ip(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None: they can), found by making one."""
    if sys.platform != "linux":
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian package iproute2)"
    if os.geteuid() != 0:
        return f"network namespaces need root (CAP_NET_ADMIN); running as uid {os.geteuid()}"
    probe = f"{owner_prefix(os.getpid())}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# gwt<pid hex>x...: the 'x' ends the pid (no hex digit), so pid 0x1a's names never match 0x1a2b's.
_OWNED = re.compile(rf"^{PREFIX_ROOT}([0-9a-f]+)x")


def owner_prefix(pid: int) -> str:
    return f"{PREFIX_ROOT}{pid:x}x"


def cleanup(prefix: str) -> None:
    """Remove every namespace (and its processes), link and route of the harness named `prefix`."""
    for ns in _ip("netns", "list", check=False).stdout.split():
        if ns.startswith(prefix):
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(": ")
        if len(parts) > 1:
            name = parts[1].split("@")[0]
            if name.startswith(prefix):
                _ip("link", "del", name, check=False)
    owner = _OWNED.match(prefix)
    if owner is not None:
        for route in _ip("route", "show", "type", "blackhole", check=False).stdout.splitlines():
            fields = route.split()
            if "metric" in fields and fields[fields.index("metric") + 1] == str(int(owner.group(1), 16)):
                _ip("route", "del", *fields, check=False)


def cleanup_stale() -> None:
    """Remove what harnesses of processes that no longer exist left behind."""
    owners: set[int] = set()
    for ns in _ip("netns", "list", check=False).stdout.split():
        match = _OWNED.match(ns)
        if match:
            owners.add(int(match.group(1), 16))
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(": ")
        match = _OWNED.match(parts[1]) if len(parts) > 1 else None
        if match:
            owners.add(int(match.group(1), 16))
    # Blackhole routes carry their owner's pid as their metric.
    for route in _ip("route", "show", "type", "blackhole", check=False).stdout.splitlines():
        fields = route.split()
        if "metric" in fields and len(fields) > 1:
            try:
                net = ipaddress.ip_network(fields[1])
            except ValueError:
                continue
            if net.subnet_of(SUBNET_POOL):  # type: ignore[arg-type]
                owners.add(int(fields[fields.index("metric") + 1]))
    for pid in owners:
        if pid != os.getpid() and not _alive(pid):
            cleanup(owner_prefix(pid))


@dataclass
class Host:
    name: str  # short: db, h1, api2 (at most 4 characters: interface names are 15 at most)
    ns: str
    ip: str
    veth: str  # the bridge-side end (cut / restore act on it)


@dataclass
class Netns:
    """A test network. Use as a context manager, or call close(); `add_host` then `popen`/`run`."""

    prefix: str = field(default_factory=lambda: owner_prefix(os.getpid()))
    hosts: dict[str, Host] = field(default_factory=dict)
    subnet: ipaddress.IPv4Network | None = None
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    _watchdog: subprocess.Popen[bytes] | None = None
    _closed: bool = False

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def start(self) -> Netns:
        cleanup_stale()
        cleanup(self.prefix)  # a previous harness of this very process that was not closed
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(Path(__file__).resolve()), self.prefix],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        self.subnet = self._pick_subnet()
        # Before anything can send: no packet for the test subnet leaves by the default route.
        _ip("route", "add", "blackhole", str(self.subnet), "metric", str(os.getpid()))
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        return self

    def _pick_subnet(self) -> ipaddress.IPv4Network:
        used = _ip("route", "show", check=False).stdout + _ip("route", "show", "type", "blackhole").stdout
        subnets: list[ipaddress.IPv4Network] = list(SUBNET_POOL.subnets(new_prefix=24))  # type: ignore[arg-type]
        first = os.getpid() % len(subnets)
        for i in range(len(subnets)):
            candidate = subnets[(first + i) % len(subnets)]
            if str(candidate.network_address).rsplit(".", 1)[0] + "." not in used:
                return candidate
        raise RuntimeError("no free test subnet in 10.200.0.0/13")

    def add_host(self, name: str) -> Host:
        if len(name) > 4 or not name.isalnum():
            raise ValueError(f"host name {name!r}: at most 4 letters or digits")
        assert self.subnet is not None, "start() first"
        ns = f"{self.prefix}-{name}"
        veth, peer = f"{self.prefix}v{name}", f"{self.prefix}p{name}"
        ip = str(self.subnet.network_address + len(self.hosts) + 1)
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("link", "set", peer, "name", "eth0", ns=ns)
        _ip("addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        host = Host(name, ns, ip, veth)
        self.hosts[name] = host
        return host

    def wrap(self, host: Host) -> list[str]:
        """The command prefix that runs a command on `host`."""
        return ["ip", "netns", "exec", host.ns]

    def run(
        self,
        host: Host,
        args: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on `host` to its end (bounded by `timeout`)."""
        return subprocess.run(
            [*self.wrap(host), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )

    def popen(
        self, host: Host, args: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process on `host` (an API server, a runner), its output into `log`;
        stopped by close() if still running."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*self.wrap(host), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
            )
        self._processes.append(process)
        return process

    def interactive(
        self,
        host: Host,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> subprocess.Popen[str]:
        """Start a process on `host` with pipes for stdin and stdout (text; stderr inherited unless
        given a file), for a test that drives it step by step; stopped by close() if still running."""
        process = subprocess.Popen(
            [*self.wrap(host), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=dict(env) if env is not None else None,
        )
        self._processes.append(process)
        return process

    def cut(self, host: Host) -> None:
        """Take `host` off the network (its link down): its packets and those to it are lost."""
        _ip("link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.veth, "up")

    def kill_host(self, host: Host) -> list[int]:
        """The host dies: SIGKILL every process in its namespace (its sockets close, as a crashed
        machine's peers see a reset). Returns the pids killed."""
        listed = subprocess.run(
            ["ip", "netns", "pids", host.ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        ).stdout.split()
        killed = []
        for pid in listed:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
        return killed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self._processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        cleanup(self.prefix)
        if self._watchdog is not None:
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.close()  # finds nothing left to remove
            try:
                self._watchdog.wait(60)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()

    def __enter__(self) -> Netns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "cleanup":
    cleanup(sys.argv[2])
