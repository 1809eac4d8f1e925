"""POST /api/gateway/runs/schedule: validated at request time; the parent shows its schedule."""

from __future__ import annotations

import pytest

from .conftest import Gateway


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"interval": "often"}, "interval"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Moon/Base"}, "timezone"),
        ({"start_at": "yesterday-ish"}, "start_at"),
        ({"interval": "1h", "repeat_until": "2001-01-01T00:00:00Z"}, "repeat_until"),
        ({"interval": "1h", "catch_up": "maybe"}, "catch_up"),
        ({"interval": "1h", "repeat_count": -1}, "repeat_count"),
    ],
)
def test_bad_timing_is_422_naming_the_field_and_stores_nothing(
    gateway: Gateway, body: dict, field: str
) -> None:
    before = gateway.counts()
    response = gateway.client.post("/api/gateway/runs/schedule", json={"bundle_id": "bench-echo", **body})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    assert gateway.counts() == before


def test_unknown_bundle_is_404_and_stores_nothing(gateway: Gateway) -> None:
    before = gateway.counts()
    response = gateway.client.post("/api/gateway/runs/schedule", json={"bundle_id": "nope", "interval": "1h"})
    assert response.status_code == 404 and response.json() == {"detail": "Bundle 'nope' not found"}
    assert gateway.counts() == before


def test_scheduled_parent_fires_children_and_shows_its_schedule(gateway: Gateway, runner: object) -> None:
    body = {
        "bundle_id": "bench-echo",
        "input_data": {"message": "tock"},
        "interval": "0.2s",
        "repeat_count": 2,
        "share_context": True,
    }
    response = gateway.client.post("/api/gateway/runs/schedule", json=body)
    assert response.status_code == 200, response.text
    parent = response.json()["run_id"]
    assert response.json()["resolved_workflow"]["workflow_id"] == "bench-echo@1.0.0:echo"
    gateway.wait_for(parent, lambda view: view["status"] == "completed")
    view = gateway.run(parent)
    assert view["is_scheduled"] is True
    schedule = view["schedule"]
    assert (schedule["fired_count"], schedule["remaining"], schedule["status"]) == (2, 0, "finished")
    assert schedule["interval_s"] == 0.2 and schedule["next_fire_at"] is None
    children = gateway.client.get("/api/gateway/runs", params={"parent_run_id": parent}).json()["items"]
    assert len(children) == 2 and all(child["session_id"] == parent for child in children)


def test_schedule_carries_the_original_gateways_fields(gateway: Gateway, runner: object) -> None:
    """Clients of the original read `schedule.interval` as sent, `kind`, the target and the times."""
    body = {"bundle_id": "bench-echo", "input_data": {"message": "x"}, "interval": "1h", "repeat_count": 3}
    parent = gateway.client.post("/api/gateway/runs/schedule", json=body).json()["run_id"]
    view = gateway.wait_for(parent, lambda v: v["schedule"]["fired_count"] == 1)
    schedule = view["schedule"]
    assert schedule["kind"] == "scheduled_run"
    assert schedule["interval"] == "1h" and schedule["interval_s"] == 3600.0
    assert (schedule["repeat_count"], schedule["repeat_until"]) == (3, None)
    assert schedule["share_context"] is True, "the original's default: firings share the parent's session"
    assert schedule["target_workflow_id"] == "bench-echo@1.0.0:echo"
    assert schedule["target_bundle_ref"] == "bench-echo@1.0.0" and schedule["target_flow_id"] == "echo"
    assert schedule["created_at"] == view["created_at"] and schedule["start_at"] is not None
    created = schedule["updated_at"]

    outcome = gateway.command(parent, "update_schedule", {"interval": "90m", "repeat_count": 5})
    assert outcome["accepted"] is True
    updated = gateway.wait_for(parent, lambda v: v["schedule"]["interval"] == "90m")["schedule"]
    assert updated["interval_s"] == 5400.0 and updated["repeat_count"] == 5
    assert updated["updated_at"] > created
    gateway.command(parent, "update_schedule", {"repeat_count": 6})
    kept = gateway.wait_for(parent, lambda v: v["schedule"]["repeat_count"] == 6)["schedule"]
    assert kept["interval"] == "90m", "an update that leaves the interval alone keeps its text"
    children = gateway.client.get("/api/gateway/runs", params={"parent_run_id": parent}).json()["items"]
    assert [child["session_id"] for child in children] == [parent]
    gateway.command(parent, "cancel")


def test_a_cron_schedule_has_no_interval(gateway: Gateway) -> None:
    body = {
        "bundle_id": "bench-echo",
        "cron": "0 9 * * *",
        "timezone": "Europe/Paris",
        "share_context": False,
    }
    parent = gateway.client.post("/api/gateway/runs/schedule", json=body).json()["run_id"]
    schedule = gateway.run(parent)["schedule"]
    assert schedule["interval"] is None and schedule["cron"] == "0 9 * * *"
    assert schedule["share_context"] is False and schedule["kind"] == "scheduled_run"
    gateway.command(parent, "cancel")
