"""Black-box: the API over real Hypercorn with a real runner process, driven as a client would."""

from __future__ import annotations

import json
import uuid

from shared_store.run_views import ends_with_status_record

from .conftest import TERMINAL, Gateway, read_sse


def _terminal(view: dict) -> bool:
    return view["status"] in TERMINAL


def _ledger(gateway: Gateway, run_id: str, **params: int) -> dict:
    response = gateway.client.get(f"/api/gateway/runs/{run_id}/ledger", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_echo_start_ledger_and_sse_done(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-echo", {"message": "hello"})
    with gateway.client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = read_sse(response)
    assert events[0].get("retry", "").isdigit(), "the stream opens with a retry: field"
    steps = [e for e in events if e.get("event") == "step"]
    done = events[-1]
    assert done["event"] == "done"
    assert json.loads(done["data"]) == {"status": "completed", "cursor": len(steps), "run_id": run_id}
    assert [int(e["id"]) for e in steps] == list(range(1, len(steps) + 1))
    for event in steps:
        data = json.loads(event["data"])
        assert data["cursor"] == int(event["id"]) and data["record"]["run_id"] == run_id

    view = gateway.run(run_id)
    assert view["status"] == "completed" and view["queued"] is False
    assert view["output"]["result"] == "hello"
    page = _ledger(gateway, run_id)
    assert page["next_after"] == len(steps) == view["ledger_len"]
    assert [r["step_id"] for r in page["items"]] == [
        json.loads(e["data"])["record"]["step_id"] for e in steps
    ]
    required = {
        "run_id",
        "step_id",
        "node_id",
        "status",
        "effect",
        "result",
        "error",
        "started_at",
        "ended_at",
    }
    assert all(required <= set(record) for record in page["items"])

    inputs = gateway.client.get(f"/api/gateway/runs/{run_id}/input_data").json()
    assert inputs == {
        "run_id": run_id,
        "workflow_id": "bench-echo@1.0.0:echo",
        "bundle_id": "bench-echo",
        "bundle_version": "1.0.0",
        "flow_id": "echo",
        "input_data": {"message": "hello"},
        "pin_ids": ["message"],
    }
    history = gateway.client.get(f"/api/gateway/runs/{run_id}/history_bundle").json()
    assert history["run"]["run_id"] == run_id and len(history["ledger"]) == len(steps)
    assert history["input"]["input_data"] == {"message": "hello"}


def test_ask_is_resumed_through_a_command(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-ask")
    view = gateway.wait_for(run_id, lambda v: v["status"] == "waiting")
    assert view["waiting"]["reason"] == "user" and view["waiting"]["prompt"] == "continue?"
    sent = gateway.command(run_id, "resume", {"payload": {"response": "yes"}})
    assert sent["accepted"] is True and sent["duplicate"] is False
    view = gateway.wait_for(run_id, _terminal)
    assert view["status"] == "completed" and view["output"]["response"] == "yes"
    with gateway.client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream") as response:
        events = read_sse(response)
    assert json.loads(events[-1]["data"])["status"] == "completed"


def test_pause_resume_and_cancel(gateway: Gateway, runner: object) -> None:
    # bench-tick waits (until) between events: a pausable wait (an ask_user wait ignores pause).
    run_id = gateway.start("bench-tick", {"n": 100_000, "delay": 0.05})
    gateway.wait_for(run_id, lambda v: v["status"] == "waiting" and v["ledger_len"] > 2)
    pause = gateway.command(run_id, "pause", {"reason": "lunch"})
    view = gateway.wait_for(run_id, lambda v: v["paused"])
    assert view["pause_reason"] == "lunch" and view["status"] == "waiting"
    status = gateway.client.get(f"/api/gateway/commands/{gateway_last_command(gateway, run_id)}").json()
    assert status["status"] == "applied" and status["seq"] == pause["seq"]
    paused_at = view["ledger_len"]
    gateway.command(run_id, "resume")
    view = gateway.wait_for(run_id, lambda v: not v["paused"] and v["ledger_len"] > paused_at)
    assert view["pause_reason"] is None and view["status"] in ("running", "waiting")
    gateway.command(run_id, "cancel", {"reason": "no longer needed"})
    view = gateway.wait_for(run_id, _terminal)
    assert view["status"] == "cancelled"
    with gateway.client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream") as response:
        events = read_sse(response)
    assert json.loads(events[-1]["data"])["status"] == "cancelled"


def gateway_last_command(gateway: Gateway, run_id: str) -> str:
    row = gateway.db.query_one(
        "SELECT command_id FROM commands WHERE run_id = ? ORDER BY seq DESC", (run_id,)
    )
    assert row is not None
    return row[0]


def test_duplicate_command_id_is_not_applied_twice(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-ask")
    gateway.wait_for(run_id, lambda v: v["status"] == "waiting")
    body = {"command_id": str(uuid.uuid4()), "run_id": run_id, "type": "pause", "payload": {}}
    first = gateway.client.post("/api/gateway/commands", json=body).json()
    again = gateway.client.post("/api/gateway/commands", json=body).json()
    assert first == {"accepted": True, "duplicate": False, "seq": first["seq"]}
    assert again == {"accepted": False, "duplicate": True, "seq": first["seq"]}
    count = gateway.db.query_one("SELECT count(*) FROM commands WHERE command_id = ?", (body["command_id"],))
    assert count == (1,)
    gateway.command(run_id, "cancel")
    gateway.wait_for(run_id, _terminal)


def test_ledger_paging_with_after_and_next_after(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-loop", {"n": 10})
    # Terminal, and its ledger closed: the runtime appends the status record just after the final save.
    view = gateway.wait_for(
        run_id, lambda v: _terminal(v) and ends_with_status_record(gateway.db, run_id, v["ledger_len"])
    )
    total = view["ledger_len"]
    assert total > 10
    whole = _ledger(gateway, run_id, limit=1000)["items"]
    seen, after, pages = [], 0, 0
    while True:
        page = _ledger(gateway, run_id, after=after, limit=3)
        if not page["items"]:
            assert page["next_after"] == after, "past the end: empty page, same cursor"
            break
        assert len(page["items"]) <= 3 and page["next_after"] == after + len(page["items"])
        seen.extend(page["items"])
        after, pages = page["next_after"], pages + 1
    assert seen == whole and len(seen) == total and pages == -(-total // 3)
    beyond = _ledger(gateway, run_id, after=total + 50)
    assert beyond == {"items": [], "next_after": total + 50}

    batch = gateway.client.post(
        "/api/gateway/runs/ledger/batch",
        json={"limit": 4, "runs": [{"run_id": run_id, "after": 2}, {"run_id": "no-such-run", "after": 0}]},
    ).json()["runs"]
    assert batch[run_id]["items"] == whole[2:6] and batch[run_id]["next_after"] == 6
    assert batch["no-such-run"]["items"] == [] and "not found" in batch["no-such-run"]["error"]


def test_sse_resume_with_last_event_id_has_no_gap_and_no_duplicate(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-loop", {"n": 30})
    path = f"/api/gateway/runs/{run_id}/ledger/stream"
    with gateway.client.stream("GET", path, params={"heartbeat_s": 1}) as response:
        first = [e for e in read_sse(response, stop_after_steps=7) if e.get("event") == "step"]
    assert len(first) == 7
    last_id = first[-1]["id"]
    # The after= query is ignored when Last-Event-ID is given.
    with gateway.client.stream(
        "GET", path, params={"after": 0}, headers={"Last-Event-ID": last_id}
    ) as response:
        rest = read_sse(response)
    assert rest[-1]["event"] == "done"
    cursors = [int(e["id"]) for e in first + rest if e.get("event") == "step"]
    total = gateway.run(run_id)["ledger_len"]
    assert cursors == list(range(1, total + 1)), "every record exactly once, in order"
    assert json.loads(rest[-1]["data"]) == {"status": "completed", "cursor": total, "run_id": run_id}
    # The query-string form resumes the same way.
    with gateway.client.stream("GET", path, params={"last_event_id": total - 2}) as response:
        tail = [int(e["id"]) for e in read_sse(response) if e.get("event") == "step"]
    assert tail == [total - 1, total]


def test_many_streams_on_one_live_run_each_get_everything(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-ask")
    gateway.wait_for(run_id, lambda v: v["status"] == "waiting")
    path = f"/api/gateway/runs/{run_id}/ledger/stream"
    streams = [gateway.client.stream("GET", path) for _ in range(5)]
    lines = [iter(s.__enter__().iter_lines()) for s in streams]
    try:
        heads = [read_sse(r, stop_after_steps=2) for r in lines]  # caught up to the wait
        gateway.command(run_id, "resume", {"payload": {"response": "ok"}})
        tails = [read_sse(r) for r in lines]
    finally:
        for s in streams:
            s.__exit__(None, None, None)
    total = gateway.run(run_id)["ledger_len"]
    for head, tail in zip(heads, tails, strict=True):
        cursors = [int(e["id"]) for e in head + tail if e.get("event") == "step"]
        assert cursors == list(range(1, total + 1))
        assert tail[-1]["event"] == "done"


def test_queued_run_reads_running_with_queued_flag_and_list_filters(lone_gateway: Gateway) -> None:
    # No runner: a start is durable and visible before any runner picks it up.
    gateway = lone_gateway
    session = f"s-{uuid.uuid4()}"
    run_ids = [gateway.start("bench-echo", {"message": i}, session_id=session) for i in range(3)]
    listed = gateway.client.get("/api/gateway/runs", params={"session_id": session, "limit": 2}).json()
    assert [item["run_id"] for item in listed["items"]] == run_ids[::-1][:2], "newest first"
    assert listed["next_offset"] == 2
    rest = gateway.client.get("/api/gateway/runs", params={"session_id": session, "offset": 2}).json()
    assert [item["run_id"] for item in rest["items"]] == run_ids[:1]
    for item in listed["items"]:
        assert item["session_id"] == session and item["status"] == "running" and item["queued"] is True
        assert item["current_node"] is None and item["waiting"] is None and item["ledger_len"] == 0
    running = gateway.client.get("/api/gateway/runs", params={"status": "running"}).json()["items"]
    assert set(run_ids) <= {item["run_id"] for item in running}
    for status in ("completed", "cancelled", "waiting", "failed"):
        assert gateway.client.get("/api/gateway/runs", params={"status": status}).json()["items"] == []
    health = gateway.client.get("/api/health").json()
    assert health["queue_depth"] >= 3 and health["status"] == "degraded" and health["runners"] == []


def test_idempotency_key_gives_the_same_run(lone_gateway: Gateway) -> None:
    gateway = lone_gateway
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"bundle_id": "bench-echo", "input_data": {"message": "once"}}
    first = gateway.client.post("/api/gateway/runs/start", json=body, headers=key)
    before = gateway.counts()
    again = gateway.client.post("/api/gateway/runs/start", json=body, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json()["run_id"] == again.json()["run_id"]
    other = gateway.client.post("/api/gateway/runs/start", json={**body, "input_data": {}}, headers=key)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    assert gateway.counts() == before


def test_artifacts_index_and_content(lone_gateway: Gateway) -> None:
    from shared_store.artifact_store import SqliteArtifactStore

    gateway = lone_gateway
    run_id = gateway.start("bench-echo")
    store = SqliteArtifactStore(gateway.db, gateway.db_path.parent / "artifacts")
    meta = store.store(b"hello bytes", content_type="text/plain", run_id=run_id, tags={"kind": "note"})
    items = gateway.client.get(f"/api/gateway/runs/{run_id}/artifacts").json()["items"]
    assert items == [
        {
            "artifact_id": meta.artifact_id,
            "run_id": run_id,
            "content_type": "text/plain",
            "size_bytes": 11,
            "created_at": meta.created_at,
            "tags": {"kind": "note"},
        }
    ]
    content = gateway.client.get(f"/api/gateway/runs/{run_id}/artifacts/{meta.artifact_id}/content")
    assert content.status_code == 200 and content.content == b"hello bytes"
    assert content.headers["content-type"].startswith("text/plain")
    other = gateway.start("bench-echo")
    wrong_run = gateway.client.get(f"/api/gateway/runs/{other}/artifacts/{meta.artifact_id}/content")
    assert wrong_run.status_code == 404
    history = gateway.client.get(f"/api/gateway/runs/{run_id}/history_bundle").json()
    assert [a["artifact_id"] for a in history["artifacts"]] == [meta.artifact_id]
