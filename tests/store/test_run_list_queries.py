"""A page of the runs list is a fixed number of statements, however many of its runs are scheduled:
their schedules come with the page (one join), not one query per run (it was N+1 over up to 5,000
rows). Counted with apsw's exec tracer on the real connection the page is read on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw

from shared_store import Database
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.run_filter import RunFilter
from shared_store.run_list import list_runs
from shared_store.schedules import ScheduleSpec, create_schedule
from shared_store.starts import enqueue_run


def _statements_for_a_page(db: Database, limit: int) -> tuple[int, list[dict[str, Any]]]:
    executed: list[str] = []

    def trace(_cursor: apsw.Cursor, sql: str, _bindings: Any) -> bool:
        executed.append(sql)
        return True

    conn = db.connection()  # this thread's: list_runs reads on it
    if db.backend == "postgresql":
        # PgConnection has no tracer: count the statements it is handed instead.
        execute = conn.execute

        def counted(sql: str, params: Any = None) -> Any:
            executed.append(sql)
            return execute(sql, params)

        conn.execute = counted  # type: ignore[method-assign]
        try:
            page = list_runs(db, RunFilter(), limit=limit)
        finally:
            del conn.execute
        return len(executed), page.items
    conn.exec_trace = trace
    try:
        page = list_runs(db, RunFilter(), limit=limit)
    finally:
        conn.exec_trace = None
    return len(executed), page.items


def _schedule(db: Database) -> str:
    resolved = resolve_workflow(db, bundle_id="bench-echo")
    spec = ScheduleSpec.parse({"interval": "1h"})
    return create_schedule(db, resolved=resolved, spec=spec, input_data={"message": "tick"})


def test_a_page_of_scheduled_runs_costs_the_same_statements_for_3_or_60(db: Database, flows: Path) -> None:
    assert import_flows_dir(db, flows) == []
    resolved = resolve_workflow(db, bundle_id="bench-echo")
    enqueue_run(db, resolved=resolved, input_data={"message": "plain"})  # an unscheduled run too
    scheduled = {_schedule(db) for _ in range(3)}
    few, items = _statements_for_a_page(db, limit=200)
    assert {i["run_id"] for i in items if i["is_scheduled"]} == scheduled
    assert all(i["schedule"] is not None for i in items if i["run_id"] in scheduled)

    scheduled |= {_schedule(db) for _ in range(57)}
    many, items = _statements_for_a_page(db, limit=200)
    assert len(items) == 61
    assert {i["run_id"] for i in items if i["is_scheduled"]} == scheduled
    assert many == few, f"{few} statements for 3 scheduled runs, {many} for 60"
    assert few >= 1, "the page's statements were counted"
