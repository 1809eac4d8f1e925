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
