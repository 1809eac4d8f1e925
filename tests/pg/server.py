"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary directory, a free port.

No pytest here (the fixtures are in tests/pg/fixtures.py): the namespace harness starts one inside a
network namespace with the same class. initdb and postgres refuse to run as root, so as root both run
as the `postgres` user (`runuser -u postgres --`, the Debian package creates that user) in a directory
chowned to it. Tuned for tests only (fsync, synchronous_commit and full_page_writes off): nothing here
is durable, which is what makes one server per session start in ~2 s and clone a db in ~tens of ms.

A server must never outlive its test session: `stop()` is called by the fixture's finalizer and by
atexit, and a watchdog process (stdin a pipe from this process) stops it when this process dies
without either (SIGKILL, a CI timeout)."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SUPERUSER = "postgres"
# initdb ~2 s and a start ~0.3 s on an idle 2-core machine; a busy shared one is far slower.
START_DEADLINE_S = 120.0

TEST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    # A cut-off client's open transaction must not hold rows (and the change feed) for ever.
    "idle_in_transaction_session_timeout": "30s",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}

_WATCHDOG = """
import subprocess, shutil, sys
sys.stdin.buffer.read()  # EOF: the test process ended, however it ended
pg_ctl, data, root, *user = sys.argv[1:]
subprocess.run([*user, pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-t", "30"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
shutil.rmtree(root, ignore_errors=True)
"""


def find_bindir(min_major: int = 15) -> Path | None:
    """The newest PostgreSQL >= min_major bin directory (Debian layout, then PATH), or None."""
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (int(p.name) for p in root.iterdir() if p.name.isdigit() and int(p.name) >= min_major),
            reverse=True,
        )
        for version in versions:
            bindir = root / str(version) / "bin"
            if (bindir / "initdb").exists() and (bindir / "postgres").exists():
                return bindir
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).parent
    return None


def unavailable_reason() -> str | None:
    """Why a test server cannot be started here (None: it can)."""
    if find_bindir() is None:
        return "PostgreSQL >= 15 binaries not found (Debian package postgresql-15; `make test-deps`)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "running as root and no `postgres` user to run initdb as (install postgresql-15)"
        if shutil.which("runuser") is None:
            return "running as root and no `runuser` to drop to the postgres user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'abstractgateway[postgres]')"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in its own temporary directory; `start()` then `stop()` (idempotent)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        settings: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
        allow_cidr: str | None = None,
    ) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL binaries")
        self.bindir = bindir
        self.host = host
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        # A command prefix the server runs under (the netns harness passes `ip netns exec NS`).
        self.wrap = list(wrap)
        # initdb --auth=trust trusts loopback only; clients on other hosts (namespaces) need a line.
        self.allow_cidr = allow_cidr
        self.root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.root / "data"
        self.sockdir = self.root / "sock"
        self.log = self.root / "server.log"
        self._as_user = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._started = False
        self.start_seconds = 0.0

    @property
    def conninfo(self) -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname=postgres connect_timeout=10"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname} connect_timeout=10"

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def _run(self, args: list[str], timeout: float) -> None:
        result = subprocess.run(
            [*self.wrap, *self._as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n{log}"
            )

    def start(self) -> PgServer:
        began = time.monotonic()
        if os.geteuid() == 0:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
        self.sockdir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.sockdir, SUPERUSER, SUPERUSER)
        # The watchdog first: from here on, whatever happens to this process, the server goes too.
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                self._bin("pg_ctl"),
                str(self.data),
                str(self.root),
                *self.wrap,
                *self._as_user,
            ],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the test's process group must not kill it first
        )
        atexit.register(self.stop)
        self._run(
            [
                self._bin("initdb"),
                "--no-sync",
                "--auth=trust",
                f"--username={SUPERUSER}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-D",
                str(self.data),
            ],
            timeout=START_DEADLINE_S,
        )
        if self.allow_cidr:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.allow_cidr} trust\n")
        self._started = True
        # A free port can be taken between free_port() and the bind: try another one (auto ports only).
        for attempt in range(3):
            try:
                self._pg_ctl_start()
                break
            except RuntimeError as exc:
                if self._fixed_port or attempt == 2 or "already in use" not in str(exc):
                    raise
                self.port = free_port(self.host)
        self.start_seconds = time.monotonic() - began
        return self

    def _pg_ctl_start(self) -> None:
        options = [f"-p {self.port}", f"-k {self.sockdir}", f"-c listen_addresses={self.host}"]
        options += [f"-c {key}={value}" for key, value in self.settings.items()]
        self._run(
            [
                self._bin("pg_ctl"),
                "start",
                "-w",
                "-t",
                str(int(START_DEADLINE_S)),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                " ".join(options),
            ],
            timeout=START_DEADLINE_S + 10,
        )

    def stop(self) -> None:
        if self._started:
            self._started = False
            subprocess.run(
                [
                    *self.wrap,
                    *self._as_user,
                    self._bin("pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            assert watchdog.stdin is not None
            watchdog.stdin.close()  # it stops nothing now (already stopped) and removes the dir
            try:
                watchdog.wait(60)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
