"""GET /api/health: the db (path, WAL, schema), live runners and queue depth; 503 when the db is unusable.

Without a valid token (when the server has tokens) it answers `{"status", "service"}` alone: the db
path, runner hosts and pids are for token holders."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from shared_store.backend import change_marker, describe, writes_ahead
from shared_store.bundle_files import BundleError, bundle_ref
from shared_store.bundles import compile_failures
from shared_store.db import Database
from shared_store.errors import StoreError
from shared_store.flow_control import live_labels, unmet_requirements
from shared_store.migrate import Migration, applied_versions, known_migrations
from shared_store.reads import bundle_sources, queue_depth
from shared_store.runners import live_runners

from .. import http, supervisor
from ..access import principal_of
from ..http import ApiRoute, reading
from ..llm_probe import text_endpoint
from ..schemas import DbHealth, HealthBrief, HealthResponse, RunnerHealth, RunnerSupervision
from . import gateway

SERVICE = "abstractgateway"
RUNNER_STALE_S = 30.0


def _version() -> str:
    try:
        return version("abstractgateway")
    except PackageNotFoundError:
        return "unknown"


VERSION = _version()
_known: list[Migration] = []


def _schema(db: Database) -> tuple[int, int, list[int]]:
    """(current, latest, pending): the shipped migrations are read once, the db's every time."""
    if not _known:
        _known.extend(known_migrations())
    applied = applied_versions(db)
    pending = [m.version for m in _known if m.version not in applied]
    return max(applied, default=0), _known[-1].version if _known else 0, pending


# The flows dir's files, as (file name, bundle_id, version, sha256), re-read when the directory
# changes (a file added, removed or renamed) and at most FILES_TTL_S old otherwise (a file edited in
# place). Health compares them with the db in one query: listing, stat-ing and querying every file on
# every call cost ~190 us of the ~280 us report (9 sample bundles, measured).
FILES_TTL_S = 2.0
_files: dict[Path, tuple[int, float, list[tuple[str, str, str, str]]]] = {}
_files_lock = threading.Lock()


def _flow_files(root: Path) -> list[tuple[str, str, str, str]]:
    try:
        stat = root.stat()
    except OSError:
        return []
    now = time.monotonic()
    cached = _files.get(root)
    if cached is not None and cached[0] == stat.st_mtime_ns and now - cached[1] < FILES_TTL_S:
        return cached[2]
    with _files_lock:  # one reader re-reads them; the others wait for its list
        cached = _files.get(root)
        if cached is not None and cached[0] == stat.st_mtime_ns and now - cached[1] < FILES_TTL_S:
            return cached[2]
        files = [root] if root.is_file() else sorted(root.glob("*.flow")) if root.is_dir() else []
        found = []
        for file in files:
            try:
                data = file.read_bytes()
                bundle_id, version = bundle_ref(data)  # the manifest alone, not every flow
            except (OSError, BundleError):
                continue  # unreadable files are reported at import, not here
            found.append((file.name, bundle_id, version, hashlib.sha256(data).hexdigest()))
        _files[root] = (stat.st_mtime_ns, now, found)
        return found


def shadowed_flow_files(db: Database, root: Path) -> list[str]:
    """Flows-dir files whose id@version is served from an upload with other content: the operator's
    file is not what runs (an upload that replaced it cannot go unnoticed)."""
    files = _flow_files(root)
    served = bundle_sources(db, [(bundle_id, ver) for _, bundle_id, ver, _ in files])
    shadowed = []
    for name, bundle_id, ver, sha in files:
        row = served.get((bundle_id, ver))
        if row is not None and row[0] != "flows_dir" and row[1] != sha:
            shadowed.append(
                f"{name}: {bundle_id}@{ver} is served from an upload "
                f"(sha256 {row[1][:12]}), not this file (sha256 {sha[:12]})"
            )
    return shadowed


async def health(request: Request) -> object:
    """Service health. `degraded` when no runner is alive (runs queue up), migrations are pending, a
    bundle does not compile, runs require runner labels that no live runner has, or the output.text
    default's LLM endpoint does not answer. Detail (db, runners, problems, llm) for token holders only."""
    gw = gateway(request)
    last = gw.health_last  # [(writes seen, when, brief body, detailed body, status)] once read
    if not (last and last[0][0] == http.writes_seen and time.monotonic() - last[0][1] < REUSE_S):
        writes = http.writes_seen
        report, status = await reading(_report, gw.db, gw.settings.flows_dir)
        brief = msgspec.json.encode(HealthBrief(report.status, SERVICE))
        last[:] = [(writes, time.monotonic(), brief, msgspec.json.encode(report), status)]
    _, _, brief, detailed, status = last[0]
    body = detailed if principal_of(request.scope).scopes else brief
    return Response(body, status, media_type="application/json")


# A report is reused on the event loop for REUSE_S unless this process wrote meanwhile: load
# balancers, pollers and dashboards hammering health then cost no thread hop, no reads and no
# encoding (bench_api's health c16 with a token: serve's CPU per request ~400 -> ~300 us; the tree
# before reads left the loop, ~290). Another process's commits (a runner's heartbeat or exit,
# `config` from the CLI) show at most that much later; this process's own writes (an upload, a
# start) at once.
REUSE_S = 0.1


@dataclass(frozen=True)
class _Reads:
    """What the report reads from the db (and the flows dir, and the LLM probe's cache)."""

    wal: bool
    schema: tuple[int, int, list[int]]
    live: list[Any]
    depth: int
    broken: list[str]
    unmet: list[str]
    shadowed: list[str]
    llm: dict[str, Any] | None


# Per read thread (each has its own connection): (db, path, flows dir, change marker), when, reads.
# The store's change marker (SQLite's data_version; PostgreSQL's next transaction id) changes whenever
# another connection commits (a start, a runner's heartbeat,
# a config change), so the reads are redone after any commit and at most READS_TTL_S later otherwise
# (liveness and due times move with the clock alone). A poller hitting health on an idle gateway
# costs one pragma, not eight statements and a directory check (~84 us -> ~10 us here).
READS_TTL_S = 1.0
_cached = threading.local()


def _reads(db: Database, flows_dir: Path | None) -> _Reads:
    key = (id(db), str(db.path), flows_dir, change_marker(db))
    now = time.monotonic()
    entry = getattr(_cached, "entry", None)
    if entry is not None and entry[0] == key and now - entry[1] < READS_TTL_S:
        return entry[2]

    live = live_runners(db, within_s=RUNNER_STALE_S)
    try:
        llm = text_endpoint(db, detailed=False)
    except StoreError:
        llm = None
    reads = _Reads(
        wal=writes_ahead(db),
        schema=_schema(db),
        live=live,
        depth=queue_depth(db),
        broken=list(compile_failures(db)),
        unmet=list(unmet_requirements(db, live_labels(live))),
        shadowed=shadowed_flow_files(db, flows_dir) if flows_dir is not None else [],
        llm=llm,
    )
    _cached.entry = (key, now, reads)
    return reads


def _report(db: Database, flows_dir: Path | None) -> tuple[HealthResponse, int]:
    try:
        reads = _reads(db, flows_dir)
    except StoreError as exc:
        db_report = DbHealth(describe(db), False, 0, 0, [], readable=False, error=str(exc))
        report = HealthResponse("unhealthy", SERVICE, VERSION, db_report, [], None, [f"database: {exc}"])
        return report, 503
    now = time.time()
    runners = [
        RunnerHealth(
            r.runner_id,
            r.version,
            r.host,
            r.pid,
            round(now - r.heartbeat_at, 3),
            labels=list(r.capabilities.get("labels") or []),
        )
        for r in reads.live
    ]
    current, latest, pending = reads.schema
    problems = reads.broken + reads.unmet
    llm = reads.llm
    if llm is not None and llm["answers"] is False:
        problems.append(f"the output.text LLM endpoint ({llm['provider']}) does not answer")
    if pending:
        problems.append(f"schema migrations pending: {pending} (run `abstractgateway migrate`)")
    if not runners:
        problems.append(f"no runner heartbeat within {RUNNER_STALE_S:.0f}s: started runs stay queued")
    supervised = None
    if supervisor.current is not None:
        supervised = RunnerSupervision(**supervisor.current.status())
        if not supervised.alive:
            problems.append(f"the runner child is down (restart {supervised.restarts}; backing off)")
    db_report = DbHealth(describe(db), reads.wal, current, latest, list(pending))
    status: Literal["healthy", "degraded"] = "degraded" if problems else "healthy"
    report = HealthResponse(
        status,
        SERVICE,
        VERSION,
        db_report,
        runners,
        reads.depth,
        problems,
        list(reads.shadowed),
        runner_supervisor=supervised,
        llm=llm,
    )
    return report, 200


routes = [
    ApiRoute(
        "/api/health",
        health,
        methods=["GET"],
        summary="Service health",
        tags=["health"],
        response=HealthResponse,
    ),
]
