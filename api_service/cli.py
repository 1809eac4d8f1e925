"""`abstractgateway serve`: the API under Hypercorn, plus one runner as a separate child process.

Cheap to import (click only): abstractgateway.cli loads it lazily. The schema is not migrated implicitly: a db
behind this code is refused with the command to run, unless `--migrate` is given.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from shared_store import Database

    from .settings import ApiSettings
    from .supervisor import RunnerSupervisor

log = logging.getLogger("abstractgateway.serve")
LOOPBACK_NAMES = ("localhost",)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


# Options left out fall back to the settings (ABSTRACTGATEWAY_*, api_service/settings.py).
@click.command()
@click.option("--host", help="Listen address (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Listen port (default 8080).")
@click.option("--data-dir", help="Data directory (db and artifacts).")
@click.option("--db", "db_file", help="SQLite file (default DATA_DIR/gateway.sqlite3).")
@click.option(
    "--db-url",
    help="A postgresql:// URL: serve from the shared PostgreSQL (default $ABSTRACTGATEWAY_DB_URL; "
    "unset: the SQLite file).",
)
@click.option(
    "--flows-dir", help="A .flow bundle, a VisualFlow .json, or a folder of them, imported at start."
)
@click.option("--no-runner", is_flag=True, help="Serve the API only; runners are started elsewhere.")
@click.option("--migrate", "auto_migrate", is_flag=True, help="Apply pending schema migrations first.")
@click.option(
    "--reuse-port",
    is_flag=True,
    help="Bind with SO_REUSEPORT: a new API process can serve the same port while the old one drains.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="API processes sharing the port (SO_REUSEPORT; default 1); the runner stays one separate process.",
)
@click.option(
    "--insecure-local-no-auth",
    is_flag=True,
    help="Serve without a bearer token (loopback hosts only). Never use on a shared network.",
)
def serve(
    host: str | None,
    port: int | None,
    data_dir: str | None,
    db_file: str | None,
    db_url: str | None,
    flows_dir: str | None,
    no_runner: bool,
    auto_migrate: bool,
    reuse_port: bool,
    workers: int | None,
    insecure_local_no_auth: bool,
) -> None:
    """Serve the HTTP API (and start one runner process unless --no-runner)."""
    from .settings import ApiSettings, SettingsError

    flags: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "flows_dir": Path(flows_dir) if flows_dir else None,
    }
    try:  # the environment is read here, once, and the settings passed down
        settings = ApiSettings.from_env(**{k: v for k, v in flags.items() if v is not None})
    except SettingsError as exc:
        _fail(str(exc))
    if db_url:
        from shared_store.settings import postgres_url

        try:
            postgres_url(db_url)
        except ValueError as exc:
            _fail(f"--db-url {exc}")
    owned_metrics_dir = _metrics_dir() if settings.workers > 1 else None
    try:
        _serve(
            settings, data_dir, db_file, db_url, no_runner, auto_migrate, reuse_port, insecure_local_no_auth
        )
    finally:
        if owned_metrics_dir is not None:
            import shutil

            shutil.rmtree(owned_metrics_dir, ignore_errors=True)


def _serve(
    settings: ApiSettings,
    data_dir: str | None,
    db_file: str | None,
    db_url: str | None,
    no_runner: bool,
    auto_migrate: bool,
    reuse_port: bool,
    insecure_local_no_auth: bool,
) -> None:
    from shared_store.logs import configure_logging

    configure_logging(settings.log_level)
    host, port, workers = settings.host, settings.port, settings.workers
    if not settings.tokens:
        if not insecure_local_no_auth:
            _fail(
                "refusing to serve without a bearer token: set ABSTRACTGATEWAY_AUTH_TOKEN (or "
                "ABSTRACTGATEWAY_AUTH_TOKENS), or pass --insecure-local-no-auth for a local-only open server"
            )
        if not _is_loopback(host):
            _fail(f"--insecure-local-no-auth serves loopback hosts only, not {host!r}")
        log.warning("serving WITHOUT authentication (--insecure-local-no-auth)")

    from .startup import ApiWorkerProcess, ChildProcess, RunnerProcess, open_store, raise_open_files_limit

    db, paths = open_store(
        settings,
        data_dir,
        db_file,
        auto_migrate=auto_migrate,
        flows_dir=settings.flows_dir,
        fail=_fail,
        db_url=db_url,
    )
    raise_open_files_limit()
    if settings.audit_log is None:
        # Bundle uploads, overwrites and deletes (with their sha256) must leave a trace by default.
        from dataclasses import replace

        settings = replace(settings, audit_log=paths.data_dir / "audit.jsonl")
    from . import supervisor

    if paths.db_url:
        # The children (runner, more API processes) open the same PostgreSQL: they inherit the URL.
        os.environ.update({DB_URL_ENV: paths.db_url})
    runner = None if no_runner else supervisor.RunnerSupervisor(RunnerProcess(paths, settings.flows_dir))
    supervisor.current = runner
    # More API processes on the port: they inherit this environment (tokens, origins, limits).
    insecure = not settings.tokens
    extra: list[ChildProcess] = [
        ApiWorkerProcess(host, port, paths, insecure=insecure) for _ in range(workers - 1)
    ]
    children: list[ChildProcess | supervisor.RunnerSupervisor] = [
        *([runner] if runner is not None else []),
        *extra,
    ]
    try:
        for child in children:
            child.start()
        _run(db, settings, paths.artifacts_dir, host, port, runner, reuse_port=reuse_port or workers > 1)
    finally:
        for child in reversed(children):
            child.stop()
        db.close()


# The store's URL variable (shared_store/settings.py DB_URL), set for the children serve starts.
DB_URL_ENV = "ABSTRACTGATEWAY_DB_URL"


def _metrics_dir() -> str | None:
    """prometheus_client's multiprocess directory, set before it is first imported: a fresh one per
    `serve --workers N` (N > 1; removed when it stops), inherited by its worker processes so any of
    them answers /metrics for all. One process keeps its counters in memory: a multiprocess value
    writes through an mmap and checks the pid at every update (a start's four metric updates took
    ~290 more bytecodes and 8 getpid calls). Returns the directory this call created, if it did."""
    import os
    import tempfile

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None  # a worker of a serve that made it, or one the operator provides (emptied by them)
    path = tempfile.mkdtemp(prefix="abstractgateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _run(
    db: Database,
    settings: ApiSettings,
    artifacts_dir: Path,
    host: str,
    port: int,
    runner: RunnerSupervisor | None,
    *,
    reuse_port: bool = False,
) -> None:
    import asyncio
    import signal

    from shared_store.backend import describe

    from . import metrics
    from .app import create_app
    from .server import hypercorn_config, reuse_port_socket, serve_until

    app = create_app(db, settings, artifacts_dir=artifacts_dir)
    sock = reuse_port_socket(host, port) if reuse_port else None
    # Thousands of SSE streams allocate many short-lived objects: default collection thresholds made
    # full collections stall every stream ~0.8 s at 5,000 clients (bench_api). Start-up objects go
    # to the permanent generation, and young collections run less often.
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    # This thread now runs the event loop, which leaves every read to the read threads: the first of
    # them takes the connection start-up used.
    db.release_connection()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        auth = "bearer token" if settings.tokens else "NO AUTH"
        extra = f", runner pid {runner.pid}" if runner is not None else ", no runner"
        log.info(f"abstractgateway serving on http://{host}:{port} ({auth}; db {describe(db)}{extra})")
        config = hypercorn_config(host, port, sock=sock, header_timeout_s=settings.header_timeout_s)
        # Hypercorn's own lines go through the root handler (JSON, with the request id), not its
        # extra stderr handler (which printed each line twice).
        config.errorlog = logging.getLogger("hypercorn.error")
        await serve_until(app, config, stop)

    try:
        try:
            import uvloop  # a faster event loop where it is installed (Linux, macOS)
        except ImportError:
            asyncio.run(main())
        else:
            uvloop.run(main())
    finally:
        metrics.process_exited()


if __name__ == "__main__":
    serve()
