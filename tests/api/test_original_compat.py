"""Fields clients of the original gateway (abstractgateway 0.15.11) read, with the original's meanings:
a run's default session, history_bundle's RunHistoryBundle keys, the start answer, bundle entrypoints,
input_data's pin ids, the run view's actor and pause stamps. Over a real Hypercorn and a real runner."""

from __future__ import annotations

import time
import uuid
from typing import Any

from .conftest import Gateway


def _records(gateway: Gateway, run_id: str) -> list[dict[str, Any]]:
    page = gateway.client.get(f"/api/gateway/runs/{run_id}/ledger", params={"limit": 10_000})
    assert page.status_code == 200, page.text
    return page.json()["items"]


def test_a_run_started_without_a_session_is_its_own_session(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-echo", {"message": "s"})
    assert gateway.run(run_id)["session_id"] == run_id, "as soon as it is stored, before a runner starts it"
    view = gateway.wait_for(run_id, lambda v: v["status"] == "completed")
    assert (view["session_id"], view["actor_id"]) == (run_id, "gateway")
    records = _records(gateway, run_id)
    assert records and all((r["session_id"], r["actor_id"]) == (run_id, "gateway") for r in records)

    named = gateway.start("bench-echo", {"message": "s"}, session_id="sess-given")
    assert gateway.wait_for(named, lambda v: v["status"] == "completed")["session_id"] == "sess-given"

    parent = gateway.start("demo-subflow", {"x": 4})
    gateway.wait_for(parent, lambda v: v["status"] == "completed")
    children = gateway.client.get("/api/gateway/runs", params={"parent_run_id": parent}).json()["items"]
    assert [c["session_id"] for c in children] == [parent], "a subflow runs in its parent's session"


def test_a_session_scoped_event_reaches_a_run_by_the_session_id_it_reads(
    gateway: Gateway, runner: object
) -> None:
    """A client of the original emits to the session its run reports: that run's own id by default."""
    run_id = gateway.start("demo-event")
    view = gateway.wait_for(run_id, lambda v: v["status"] == "waiting")
    body = {"name": "demo:go", "scope": "session", "payload": {"n": 7}}
    gateway.command(view["session_id"], "emit_event", body)
    done = gateway.wait_for(run_id, lambda v: v["status"] == "completed")
    assert done["output"]["event"]["payload"] == {"n": 7}
    assert done["output"]["event"]["session_id"] == run_id


def test_scheduled_runs_sessions(gateway: Gateway, runner: object) -> None:
    """The parent is its own session; shared context: children in it; otherwise each its own."""
    for share in (True, False):
        body = {"bundle_id": "bench-echo", "interval": "0.1s", "repeat_count": 2, "share_context": share}
        parent = gateway.client.post("/api/gateway/runs/schedule", json=body).json()["run_id"]
        assert gateway.run(parent)["session_id"] == parent
        gateway.wait_for(parent, lambda v: v["status"] == "completed")
        children = gateway.client.get("/api/gateway/runs", params={"parent_run_id": parent}).json()["items"]
        assert len(children) == 2
        for child in gateway_wait_all(gateway, [c["run_id"] for c in children]):
            assert child["session_id"] == (parent if share else child["run_id"]), (share, child)


def gateway_wait_all(gateway: Gateway, run_ids: list[str]) -> list[dict[str, Any]]:
    return [gateway.wait_for(r, lambda v: v["status"] == "completed") for r in run_ids]


def test_history_bundle_has_the_original_keys_beside_ours(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("demo-subflow", {"x": 5})
    gateway.wait_for(run_id, lambda v: v["status"] == "completed")
    child = gateway.client.get("/api/gateway/runs", params={"parent_run_id": run_id}).json()["items"][0]
    response = gateway.client.get(f"/api/gateway/runs/{run_id}/history_bundle")
    assert response.status_code == 200, response.text
    doc = response.json()

    # Ours, as before.
    assert doc["run"]["run_id"] == run_id and doc["input"]["input_data"] == {"x": 5}
    assert [r["step_id"] for r in doc["ledger"]] == [r["step_id"] for r in _records(gateway, run_id)]
    assert [c["run"]["run_id"] for c in doc["children"]] == [child["run_id"]]
    # The original's: abstractruntime's RunHistoryBundle v1.
    assert (doc["version"], doc["root_run_id"], doc["detail"]) == (1, run_id, "full")
    # The runtime's input_data is the run's public vars: the input, and what the gateway added (as the
    # original, its workspace_root).
    assert doc["input_data"]["x"] == 5 and doc["session"] is None and doc["warnings"] == []
    assert set(doc["ledgers"]) == {run_id, child["run_id"]}
    for rid, ledger in doc["ledgers"].items():
        records = _records(gateway, rid)
        assert ledger["total"] == len(records) and (ledger["cursor_start"], ledger["cursor_end"]) == (
            1,
            len(records),
        )
        assert [i["cursor"] for i in ledger["items"]] == list(range(1, len(records) + 1))
        assert [i["record"]["step_id"] for i in ledger["items"]] == [r["step_id"] for r in records]
    assert len(doc["timeline"]) == sum(len(v["items"]) for v in doc["ledgers"].values())
    assert {"run_id", "cursor", "node_id", "status", "effect_type", "duration_ms"} <= set(doc["timeline"][0])
    # The workflow the run started with, kept as an artifact of the run (as the original does).
    snapshot = doc["workflow_snapshot"]
    assert snapshot["workflow_id"] == "demo-subflow@0.1.0:main" and snapshot["format"] == "visualflow_json"
    listed = gateway.client.get(f"/api/gateway/runs/{run_id}/artifacts").json()["items"]
    assert [a["tags"]["kind"] for a in listed if a["artifact_id"] == snapshot["artifact_id"]] == [
        "workflow_snapshot"
    ]
    content = gateway.client.get(f"/api/gateway/runs/{run_id}/artifacts/{snapshot['artifact_id']}/content")
    assert content.status_code == 200
    stored = content.json()
    assert (stored["kind"], stored["bundle_ref"], stored["flow_id"]) == (
        "visualflow_json",
        "demo-subflow@0.1.0",
        "main",
    )
    assert {n["id"] for n in stored["visualflow"]["nodes"]} >= {"start", "end"}


def test_history_bundle_options_as_the_original(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("bench-loop", {"n": 3})
    gateway.wait_for(run_id, lambda v: v["status"] == "completed")
    total = len(_records(gateway, run_id))
    url = f"/api/gateway/runs/{run_id}/history_bundle"

    tail = gateway.client.get(url, params={"ledger_mode": "tail", "ledger_max_items": 2}).json()
    window = tail["ledgers"][run_id]
    assert (window["total"], window["cursor_start"], window["cursor_end"]) == (total, total - 1, total)
    assert [w["code"] for w in tail["warnings"]] == ["ledger_tail_window"]
    assert len(tail["ledger"]) == total, "ours stays the whole ledger"

    replay = gateway.client.get(url, params={"detail": "replay", "include_session": "true"}).json()
    assert replay["detail"] == "replay" and replay["timeline"] == []
    assert replay["session"]["session_id"] == run_id and isinstance(replay["session"]["turns"], list)

    for name, bad in (("ledger_mode", "middle"), ("detail", "short")):
        refused = gateway.client.get(url, params={name: bad})
        assert refused.status_code == 400 and name in refused.json()["detail"]
    assert gateway.client.get(url, params={"session_turn_limit": 0}).status_code == 422
    assert gateway.client.get(url, params={"nope": 1}).status_code == 400
    assert gateway.client.get("/api/gateway/runs/nope/history_bundle").status_code == 404


def test_a_queued_run_exports_an_empty_history_and_start_warns_without_a_runner(
    lone_gateway: Gateway,
) -> None:
    started = lone_gateway.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).json()
    assert "runner" in started["runner_warning"], started
    run_id = started["run_id"]
    view = lone_gateway.run(run_id)
    assert (view["queued"], view["actor_id"], view["session_id"]) == (True, "gateway", run_id)
    before = lone_gateway.counts()
    doc = lone_gateway.client.get(f"/api/gateway/runs/{run_id}/history_bundle").json()
    assert doc["ledgers"][run_id]["items"] == [] and doc["workflow_snapshot"] is None
    assert [w["code"] for w in doc["warnings"]] == ["run_not_started"]
    assert lone_gateway.counts() == before, "an export writes nothing"


def test_start_answers_the_workflow_name_and_no_warning_with_a_live_runner(
    gateway: Gateway, runner: object
) -> None:
    body = {"bundle_id": "bench-echo", "input_data": {"message": "w"}}
    for _ in range(500):  # until the runner's first heartbeat is seen (and the 1 s cache expired)
        started = gateway.client.post("/api/gateway/runs/start", json=body).json()
        if started["runner_warning"] is None:
            break
        time.sleep(0.05)
    assert started["runner_warning"] is None
    assert started["resolved_workflow"] == {
        "workflow_id": "bench-echo@1.0.0:echo",
        "bundle_id": "bench-echo",
        "bundle_version": "1.0.0",
        "flow_id": "echo",
        "name": "bench-echo",
        "source": "client",
    }


def test_bundle_entrypoints_and_deprecation_as_the_original(lone_gateway: Gateway) -> None:
    client = lone_gateway.client
    listed = {b["bundle_id"]: b for b in client.get("/api/gateway/bundles").json()["items"]}
    entry = listed["bench-echo"]["entrypoints"][0]
    assert entry["workflow_id"] == "bench-echo@1.0.0:echo"
    assert (entry["deprecated"], entry["deprecated_at"], entry["deprecated_reason"]) == (False, None, None)

    detail = client.get("/api/gateway/bundles/bench-tick").json()["entrypoints"][0]
    assert [(p["id"], p["required"]) for p in detail["inputs"]] == [("n", False), ("delay", False)]
    assert detail["node_index"]["start"]["type"] == "on_flow_start"
    assert detail["node_index"]["wait"]["type"] == "wait_until"

    marked = client.post("/api/gateway/bundles/bench-tick/deprecate", json={"reason": "old"}).json()
    assert marked["ok"] is True and marked["deprecated_at"]
    shown = client.get("/api/gateway/bundles", params={"include_deprecated": "true"}).json()["items"]
    tick = next(b for b in shown if b["bundle_id"] == "bench-tick")["entrypoints"][0]
    assert (tick["deprecated"], tick["deprecated_reason"], tick["deprecated_at"]) == (
        True,
        "old",
        marked["deprecated_at"],
    ), "a bundle's deprecation shows on its entrypoints"
    cleared = client.post("/api/gateway/bundles/bench-tick/undeprecate", json={}).json()
    assert (cleared["ok"], cleared["removed"]) == (True, True)
    again = client.post("/api/gateway/bundles/bench-tick/undeprecate", json={}).json()
    assert again["removed"] is False

    flow = client.post("/api/gateway/bundles/bench-tick/deprecate", json={"flow_id": "tick", "reason": "f"})
    tick = client.get("/api/gateway/bundles/bench-tick").json()["entrypoints"][0]
    assert (tick["deprecated"], tick["deprecated_reason"]) == (True, "f")
    assert tick["deprecated_at"] == flow.json()["deprecated_at"]
    client.post("/api/gateway/bundles/bench-tick/undeprecate", json={"flow_id": "tick"})


def test_input_schema_has_the_original_json_schema(lone_gateway: Gateway) -> None:
    schema = lone_gateway.client.get("/api/gateway/bundles/bench-tick/flows/tick/input_schema").json()
    assert (schema["bundle_ref"], schema["workflow_id"], schema["version"]) == (
        "bench-tick@1.0.0",
        "bench-tick@1.0.0:tick",
        1,
    )
    assert schema["input_data_schema"] == {
        "type": "object",
        "additionalProperties": True,
        "properties": {"n": {"x-abstract-type": "any"}, "delay": {"x-abstract-type": "any"}},
    }
    assert [pin["schema"] for pin in schema["inputs"]] == [{"x-abstract-type": "any"}] * 2
    assert schema["defaults"] == {}


def test_input_data_names_the_entry_pins(lone_gateway: Gateway) -> None:
    run_id = lone_gateway.start("bench-echo", {"message": "p"})
    data = lone_gateway.client.get(f"/api/gateway/runs/{run_id}/input_data").json()
    assert data["pin_ids"] == ["message"] and data["input_data"] == {"message": "p"}


def test_run_view_shows_when_it_was_paused_and_resumed(gateway: Gateway, runner: object) -> None:
    run_id = gateway.start("demo-event")  # an event wait can be paused (an ask_user wait cannot)
    view = gateway.wait_for(run_id, lambda v: v["status"] == "waiting")
    assert (view["paused_at"], view["resumed_at"]) == (None, None)
    gateway.command(run_id, "pause", {"reason": "lunch"})
    paused = gateway.wait_for(run_id, lambda v: v["paused"])
    assert paused["paused_at"] and paused["pause_reason"] == "lunch"
    gateway.command(run_id, "resume", {})
    resumed = gateway.wait_for(run_id, lambda v: not v["paused"])
    assert resumed["resumed_at"] and resumed["resumed_at"] >= paused["paused_at"]
    assert resumed["paused_at"] == paused["paused_at"], "the runtime keeps the last pause stamp"
    gateway.client.post(
        "/api/gateway/commands",
        json={"command_id": str(uuid.uuid4()), "run_id": run_id, "type": "cancel", "payload": {}},
    )
