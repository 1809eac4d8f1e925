"""What `serve` does before and after serving: open (and check) the store, import the flows dir,
run one runner as a child process."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from shared_store import Database, StorePaths
from shared_store.backend import connect_store, describe
from shared_store.bundles import import_flows_dir
from shared_store.db import ConnectionSizes
from shared_store.errors import StoreError
from shared_store.migrate import create_schema_if_new, migrate, require_current
from shared_store.settings import SharedSettings

log = logging.getLogger("abstractgateway.serve")

# The API's SQLite connections (its writer thread and up to 4 read threads). With the store's
# defaults (32 MiB page cache, 256 MiB map each) the writer kept every page it touched: serve's RSS
# went 47 -> 87 MB over 44,000 starts and commands (bench_api phase A, a 41 MB db), 28 MB of it the
# writer's page cache, or with a smaller cache the same pages again through its map (RssFile
# 16 -> 40 MB). 4 MiB of cache and no map for the connection that writes: 53 MB, and the same
# starts/s. Readers keep the map: a 1000-record ledger page read after another connection's commit
# (which empties a connection's page cache) took ~0.3-0.6 ms longer through read() than through the
# map. The reads that do go through a reader's cache are of pages still in the WAL.
API_SIZES = ConnectionSizes(cache_kib=4_096, mmap_bytes=256 * 1024 * 1024, write_mmap_bytes=0)


def open_store(
    settings: SharedSettings,
    data_dir: str | None,
    db_file: str | None,
    *,
    auto_migrate: bool,
    flows_dir: Path | None,
    fail: Callable[[str], NoReturn],
    db_url: str | None = None,
) -> tuple[Database, StorePaths]:
    """Open the db (a new one gets the whole schema), migrate it if asked, refuse a schema this code
    does not match, import flows. `db_url` (--db-url) wins over ABSTRACTGATEWAY_DB_URL; either one
    selects PostgreSQL, and then no SQLite file is named."""
    paths = StorePaths.from_settings(settings, data_dir)
    if db_url:
        paths = replace(paths, db_url=db_url)
    db_file = db_file or (str(settings.db_path) if settings.db_path else None)
    if paths.db_url and db_file:
        fail(
            "give the store once: a PostgreSQL URL (--db-url / ABSTRACTGATEWAY_DB_URL) or a SQLite file (--db)"
        )
    if db_file:
        db_path = Path(db_file).expanduser()
        # As the runner does for --db: artifacts live beside the db file.
        paths = StorePaths(
            data_dir=paths.data_dir, db_path=db_path, artifacts_dir=db_path.parent / "artifacts"
        )
    try:
        db = connect_store(
            paths.db_target, data_dir=paths.data_dir, application_name="abstractgateway-api", sizes=API_SIZES
        )
    except StoreError as exc:
        fail(str(exc))
    try:
        if auto_migrate:
            migrate(db)
        elif create_schema_if_new(db):
            log.info("created the database %s at the latest schema", describe(db))
        require_current(db)
    except StoreError as exc:
        db.close()
        fail(f"{exc} (or start serve with --migrate)" if "migrate" in str(exc) else str(exc))
    if flows_dir is not None:
        for problem in import_flows_dir(db, flows_dir):
            log.warning("flows dir: %s", problem)
    return db, paths


def raise_open_files_limit() -> None:
    """Each SSE client holds a socket: lift the soft open-files limit to the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )
    except (ImportError, ValueError, OSError):
        pass


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when `serve` dies (a runner then releases its leases)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the runner's parent-pid watch still stops it
        pass


class ChildProcess:
    """A child process `serve` starts and stops with itself (SIGTERM, then kill if it hangs)."""

    name = "child"

    def __init__(self, args: list[str], *, stop_timeout_s: float = 30.0) -> None:
        self.args = args
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(self.args, env=env, preexec_fn=_die_with_parent)

    def stop(self) -> None:
        """SIGTERM (a runner finishes its step and releases its leases), then wait; kill if it hangs."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s pid %s ignored SIGTERM for %.0fs; killing it", self.name, process.pid, self.stop_timeout_s
            )
            process.kill()
            process.wait()


class RunnerProcess(ChildProcess):
    """One `abstractgateway runner` child on the same db: the API and the runner stay split."""

    name = "runner"

    def __init__(self, paths: StorePaths, flows_dir: Path | None, *, stop_timeout_s: float = 30.0) -> None:
        # A short idle poll: a command reaches the run within ~10 ms (resume -> done), for one
        # index probe per poll while idle. The PostgreSQL URL (a password inside) travels in the
        # environment (serve_environment), never on a command line `ps` shows.
        store = [] if paths.db_url else ["--db", str(paths.db_path)]
        args = [sys.executable, "-m", "abstractgateway", "runner", *store, "--poll-s", "0.01"]
        if flows_dir is not None:
            args += ["--flows-dir", str(flows_dir)]
        super().__init__(args, stop_timeout_s=stop_timeout_s)


class ApiWorkerProcess(ChildProcess):
    """One more API process on the same port (SO_REUSEPORT): `serve --workers N` starts N - 1."""

    name = "api worker"

    def __init__(self, host: str, port: int, paths: StorePaths, *, insecure: bool) -> None:
        args = [sys.executable, "-m", "abstractgateway", "serve", "--host", host, "--port", str(port)]
        args += [] if paths.db_url else ["--db", str(paths.db_path)]
        args += ["--no-runner", "--reuse-port", "--workers", "1"]
        if insecure:
            args.append("--insecure-local-no-auth")
        super().__init__(args, stop_timeout_s=30.0)
