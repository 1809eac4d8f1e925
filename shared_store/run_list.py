"""The runs list: run summaries (no output), filtered, paged by offset or by keyset cursor.

A page is one query: the runs rows, their schedules (LEFT JOIN, no query per run) and, only for runs
that are waiting, failed or paused, the few state fields a summary shows, pulled out of the RunState
document by SQLite (json_extract with several paths parses the document once) so that neither a large
output nor large vars ever leave the database. `GET /runs/{id}` still shows the output.

Keyset paging orders by (created_at DESC, run_id): a run started after the first page has a newer
created_at and can only appear before the cursor, so pages never shift or repeat while runs arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from . import queries as q
from .codec import decode
from .db import Database
from .flow_control import flow_from_row, live_label_sets
from .run_filter import (
    BY_RUN_ID,
    STATUS_SQL,
    RunFilter,
    decode_cursor,
    encode_cursor,
    order_columns,
    status_arms,
    where_sql,
)
from .run_views import client_status
from .schedules import schedule_from_row

PAGE_MAX = 10_000  # a larger `limit` is served up to this (CONTRACT: never refused)

_SCHEDULE_COLUMNS = ", ".join(
    f"sc.{column.strip()}" for column in q.SCHEDULE_OF.split("SELECT ", 1)[1].split(" FROM ", 1)[0].split(",")
)
# Flow control (issue 18's view: priority, key, labels, why it is held), as q.RUN_FLOW_VIEW selects it.
_FLOW_COLUMNS = q.RUN_FLOW_VIEW.split("SELECT ", 1)[1].split(" FROM ", 1)[0].replace("k.", "fk.")
_DETAIL_PATHS = "'$.waiting', '$.error', '$.output.error', '$.vars._runtime.control.pause_reason'"
# The same four fields as one JSON array on PostgreSQL: the document is bytea (UTF-8 JSON), parsed
# once into jsonb; a missing path is null, as SQLite's json_extract gives it.
_DETAIL_PG = (
    "(SELECT jsonb_build_array(d -> 'waiting', d -> 'error', d #> '{output,error}', "
    "d #> '{vars,_runtime,control,pause_reason}')::text FROM "
    "(SELECT convert_from(s.run_json, 'UTF8')::jsonb AS d FROM run_states s WHERE s.run_id = r.run_id) x)"
)
_DETAIL_SQLITE = (
    f"(SELECT json_extract(CAST(s.run_json AS TEXT), {_DETAIL_PATHS}) FROM run_states s "
    "WHERE s.run_id = r.run_id)"
)


def _columns(detail: str) -> str:
    return (
        "r.run_id, r.workflow_id, r.status, r.current_node, r.created_at, r.updated_at, r.session_id, "
        "r.parent_run_id, r.paused, r.output_failed, r.ledger_len, r.wait_reason, r.wait_key, r.wait_until, "
        "r.tags, r.metadata, r.rerun_of, "
        f"CASE WHEN r.status IN ('waiting', 'failed') OR r.paused = 1 OR r.output_failed = 1 THEN {detail} END, "
        f"sc.run_id, {_SCHEDULE_COLUMNS}, {_FLOW_COLUMNS}"
    )


_COLUMNS = _columns(_DETAIL_SQLITE)
_COLUMNS_PG = _columns(_DETAIL_PG)
_N_FLOW = len(_FLOW_COLUMNS.split(","))
_JOINS = "LEFT JOIN schedules sc ON sc.run_id = r.run_id LEFT JOIN flow_keys fk ON fk.key = r.concurrency_key"
_N_RUN = 18  # columns before the schedule's


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def page_sql(
    f: RunFilter,
    params: dict[str, Any],
    *,
    cursor: tuple[str, str] | None,
    offset: int,
    columns: str = _COLUMNS,
    created_pos: int = 5,
    q_scope: str = "both",
) -> str:
    """A page's query (params filled in; :limit is the caller's). `columns` must have r.run_id first
    and r.created_at at `created_pos`: a page split by status is ordered by those positions."""
    source, conditions = where_sql(f, params, q_scope)
    created, run_id = order_columns(f)
    if cursor is not None:
        params["c_created"], params["c_run_id"] = cursor
        conditions.append(f"({created} < :c_created OR ({created} = :c_created AND {run_id} > :c_run_id))")
    params["offset"] = offset
    order = f"ORDER BY {created} DESC, {run_id}"
    arms = status_arms(f) if source == "runs r" else []
    if source == BY_RUN_ID and f.statuses:  # a few runs of an id prefix: statuses checked on them
        conditions.append("(" + " OR ".join(STATUS_SQL[s] for s in f.statuses) + ")")
    if not arms:
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT {columns} FROM {source} {_JOINS}{where} {order} LIMIT :limit OFFSET :offset"
    # Statuses: one arm per stored status, each walking its own index in page order and reading at
    # most limit + offset rows; the union of a few short lists is then ordered. One index range with
    # an OR (or IN) over statuses would be sorted whole first (54 ms for 5% of 100k runs, measured).
    params["arm_limit"] = params["limit"] + offset
    selects = []
    for n, (status, failed) in enumerate(arms):
        index = "runs_output_failed_page" if failed == 1 else "runs_status_page"
        wanted = [f"r.status = '{status}'"]  # statuses from a fixed allowlist (STATUS_ARMS)
        if failed is not None:
            wanted.append(f"r.output_failed = {failed}")
        where = " AND ".join([*wanted, *conditions])
        selects.append(
            f"SELECT * FROM (SELECT {columns} FROM runs r INDEXED BY {index} {_JOINS} "
            f"WHERE {where} {order} LIMIT :arm_limit) AS arm{n}"  # (PostgreSQL 15 needs the alias)
        )
    # Ordinals, not names: the schedule's run_id repeats the name.
    return f"{' UNION ALL '.join(selects)} ORDER BY {created_pos} DESC, 1 LIMIT :limit OFFSET :offset"


def list_runs(
    db: Database, f: RunFilter, *, limit: int = 50, offset: int = 0, cursor: str | None = None
) -> Page:
    """One page of run summaries, newest first. `cursor` (a next_cursor) continues after a page."""
    params: dict[str, Any] = {"limit": max(1, min(limit, PAGE_MAX))}
    at = None if cursor is None else decode_cursor(cursor)
    columns = _COLUMNS_PG if db.backend == "postgresql" else _COLUMNS
    sql = page_sql(f, params, cursor=at, offset=offset, columns=columns, q_scope=q_scope(db, f.q))
    rows = db.query(sql, params)
    label_sets = live_label_sets(db)
    items = [{**_summary(row), **flow_from_row(db, row[-_N_FLOW:], label_sets)} for row in rows]
    last = items[-1] if len(items) == params["limit"] else None
    return Page(items, None if last is None else encode_cursor(last["created_at"], last["run_id"]))


_Q_WORKFLOW = "SELECT 1 FROM runs INDEXED BY runs_workflow_created WHERE workflow_id >= :q AND workflow_id < :end LIMIT 1"
_Q_RUNS = "SELECT count(*) FROM (SELECT 1 FROM runs WHERE run_id >= :q AND run_id < :end LIMIT :n) AS prefix"
# Up to this many runs of an id prefix are read by primary key and sorted (4,096 took 27 ms); more
# are dense enough (run ids are random uuid4s) that walking the page order finds a page soon: a
# prefix matching all of 100k runs took 550 ms sorted, 1.6 ms walked.
Q_SORT_MAX = 2_000


def q_scope(db: Database, q: str | None) -> str:
    """Whether a `q` prefix names workflows, a few run ids, or nothing: bounded index probes, so a
    page is read the cheap way for what it is (run_filter.Q_SCOPES)."""
    if q is None:
        return "both"
    bounds = {"q": q, "end": q + "\U0010ffff", "n": Q_SORT_MAX + 1}
    workflow = db.query_one(_Q_WORKFLOW, bounds) is not None
    runs = int(db.query_one(_Q_RUNS, bounds)[0])  # type: ignore[index]
    if workflow:
        return "both" if runs else "workflow"
    if runs:
        return "run" if runs <= Q_SORT_MAX else "both"
    return "none"


class _Detail(msgspec.Struct, array_like=True):
    waiting: dict[str, Any] | None = None
    error: Any = None
    output_error: Any = None
    pause_reason: Any = None


_detail_decoder = msgspec.json.Decoder(_Detail)


def _detail(raw: str | None) -> _Detail:
    if not raw:
        return _Detail()
    try:
        return _detail_decoder.decode(raw)
    except msgspec.ValidationError:  # a field outside its usual type: show what is plain
        values = list(decode(raw)) + [None] * 4
        waiting = values[0] if isinstance(values[0], dict) else None
        return _Detail(waiting, values[1], values[2], values[3])


_WAITING_KEYS = ("reason", "wait_key", "until", "prompt", "choices", "allow_free_text", "details")


def _summary(row: tuple[Any, ...]) -> dict[str, Any]:
    (run_id, workflow_id, status, node, created, updated, session, parent, paused, failed, length) = row[:11]
    wait_reason, wait_key, wait_until, tags, metadata, rerun_of, detail_raw = row[11:_N_RUN]
    detail = _detail(detail_raw)
    shown = client_status(status, bool(failed))
    error = None
    if shown == "failed":
        error = detail.error or detail.output_error
        error = None if error is None else str(error)
    waiting = None
    if status == "waiting":
        doc = detail.waiting or {}
        waiting = {key: doc.get(key) for key in _WAITING_KEYS}
        waiting.update(reason=doc.get("reason") or wait_reason or "", wait_key=doc.get("wait_key", wait_key))
        waiting["until"] = doc.get("until", wait_until)
        waiting["allow_free_text"] = bool(doc.get("allow_free_text", True))
    schedule = schedule_from_row(row[_N_RUN + 1 : -_N_FLOW]) if row[_N_RUN] is not None else None
    reason = detail.pause_reason if paused else None
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "status": shown,
        "queued": status == "queued",
        "current_node": node,
        "created_at": created,
        "updated_at": updated,
        "session_id": session,
        "parent_run_id": parent,
        "error": error,
        "paused": bool(paused),
        "pause_reason": None if reason is None else str(reason),
        "waiting": waiting,
        "is_scheduled": schedule is not None,
        "schedule": None if schedule is None else schedule.to_json(),
        "ledger_len": int(length),
        "tags": decode(tags) if tags else [],
        "metadata": decode(metadata) if metadata else {},
        "rerun_of": rerun_of,
    }
