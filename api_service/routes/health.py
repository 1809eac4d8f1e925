"""GET /api/health: the db (path, WAL, schema), live runners and queue depth; 503 when the db is unusable.

Without a valid token (when the server has tokens) it answers `{"status", "service"}` alone: the db
path, runner hosts and pids are for token holders."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from starlette.requests import Request

from shared_store.bundles import compile_failures, shadowed_flow_files
from shared_store.db import Database
from shared_store.errors import StoreError
from shared_store.flow_control import live_labels, unmet_requirements
from shared_store.migrate import Migration, applied_versions, known_migrations
from shared_store.reads import queue_depth
from shared_store.runners import live_runners

from .. import supervisor
from ..access import principal_of
from ..http import ApiRoute, json_response, reading
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


async def health(request: Request) -> object:
    """Service health. `degraded` when no runner is alive (runs queue up), migrations are pending, a
    bundle does not compile, runs require runner labels that no live runner has, or the output.text
    default's LLM endpoint does not answer. Detail (db, runners, problems, llm) for token holders only."""
    gw = gateway(request)
    report, status = await reading(_report, gw.db, gw.settings.flows_dir)
    if not principal_of(request.scope).scopes:
        return json_response(HealthBrief(report.status, SERVICE), status)
    return json_response(report, status)


def _report(db: Database, flows_dir: Path | None) -> tuple[HealthResponse, int]:
    try:
        mode = db.query_one("PRAGMA journal_mode")
        current, latest, pending = _schema(db)
        now = time.time()
        live = live_runners(db, within_s=RUNNER_STALE_S)
        runners = [
            RunnerHealth(
                r.runner_id,
                r.version,
                r.host,
                r.pid,
                round(now - r.heartbeat_at, 3),
                labels=list(r.capabilities.get("labels") or []),
            )
            for r in live
        ]
        depth = queue_depth(db)
        broken = compile_failures(db)
        unmet = unmet_requirements(db, live_labels(live))
    except StoreError as exc:
        db_report = DbHealth(str(db.path), False, 0, 0, [], readable=False, error=str(exc))
        report = HealthResponse("unhealthy", SERVICE, VERSION, db_report, [], None, [f"database: {exc}"])
        return report, 503
    shadowed = shadowed_flow_files(db, flows_dir) if flows_dir is not None else []
    problems = list(broken) + unmet
    try:
        llm = text_endpoint(db, detailed=False)
    except StoreError:
        llm = None
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
    wal = bool(mode) and str(mode[0]).lower() == "wal"
    db_report = DbHealth(str(db.path), wal, current, latest, pending)
    status = "degraded" if problems else "healthy"
    report = HealthResponse(
        status,
        SERVICE,
        VERSION,
        db_report,
        runners,
        depth,
        problems,
        shadowed,
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
