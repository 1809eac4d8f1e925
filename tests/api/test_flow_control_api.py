"""Flow control over HTTP: start and schedule fields, 409 on a full key (nothing written), 422 on bad
values, run views / runs list / health saying why a run is not running, media kinds requiring labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Gateway, make_gateway


def counts(gw: Gateway) -> dict[str, int]:
    tables = ("runs", "run_states", "commands", "run_start_keys", "flow_keys")
    return {t: int(gw.db.query_one(f"SELECT count(*) FROM {t}")[0]) for t in tables}  # type: ignore[index]


def test_reject_on_a_full_key_is_409_with_the_reason_and_writes_nothing(lone_gateway: Gateway) -> None:
    gw = lone_gateway
    first = gw.start("bench-echo", {"user": "u1"}, concurrency_key="user:{input.user}", max_concurrent=1)
    assert gw.run(first)["concurrency_key"] == "user:u1"
    before = counts(gw)
    response = gw.client.post(
        "/api/gateway/runs/start",
        json={"bundle_id": "bench-echo", "input_data": {"user": "u1"}, "concurrency_key": "user:{input.user}",
              "overflow": "reject"},
        headers={"Idempotency-Key": "reject-me"},
    )  # fmt: skip
    assert response.status_code == 409, response.text
    assert (
        "'user:u1' has 1 of max_concurrent 1 runs in flight (overflow: reject)" in response.json()["detail"]
    )
    assert counts(gw) == before
    # Another key is not affected.
    gw.start("bench-echo", {"user": "u2"}, concurrency_key="user:{input.user}", overflow="reject")


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        ({"priority": 0}, "$.priority"),
        ({"priority": 6}, "$.priority"),
        ({"requires": ["gpu", "no spaces"]}, "$.requires"),
        ({"requires": "gpu"}, "$.requires"),
        ({"concurrency_key": "user:{input.missing}"}, "the input has no 'missing'"),
        ({"concurrency_key": "user:{user}"}, "must name an input field"),
        ({"max_concurrent": 2}, "need a concurrency_key"),
        ({"concurrency_key": "k", "max_concurrent": 0}, "$.max_concurrent"),
        ({"concurrency_key": "k", "overflow": "drop"}, "$.overflow"),
        ({"concurrency_key": "k", "rate_limit": {"limit": 5}}, "window_s"),
        ({"concurrency_key": "k", "rate_limit": {"limit": 5, "window_s": 0}}, "window_s"),
    ],
)
def test_bad_flow_control_is_422_naming_it_and_writes_nothing(
    lone_gateway: Gateway, extra: dict, word: str
) -> None:
    before = counts(lone_gateway)
    body = {"bundle_id": "bench-echo", "input_data": {}, **extra}
    response = lone_gateway.client.post("/api/gateway/runs/start", json=body)
    assert response.status_code == 422, response.text
    assert word in str(response.json()["detail"])
    assert counts(lone_gateway) == before


def test_run_views_and_the_runs_list_say_why_a_run_is_not_running(lone_gateway: Gateway) -> None:
    gw = lone_gateway
    holder = gw.start("bench-echo", priority=5, concurrency_key="views", max_concurrent=1)
    held = gw.start("bench-echo", concurrency_key="views")
    gpu = gw.start("bench-echo", requires=["gpu", "region=eu"], priority=1)
    view = gw.run(held)
    assert (view["priority"], view["concurrency_key"], view["requires"]) == (3, "views", [])
    assert view["blocked"]["reason"] == "concurrency_limit" and "'views'" in view["blocked"]["detail"]
    assert gw.run(holder)["blocked"] is None and gw.run(holder)["priority"] == 5
    assert gw.run(gpu)["blocked"]["reason"] == "no_runner_with_labels"
    assert gw.run(gpu)["requires"] == ["gpu", "region=eu"]
    items = {i["run_id"]: i for i in gw.client.get("/api/gateway/runs", params={"limit": 50}).json()["items"]}
    assert items[held]["blocked"]["reason"] == "concurrency_limit"
    assert items[gpu]["requires"] == ["gpu", "region=eu"] and items[gpu]["priority"] == 1
    health = gw.client.get("/api/health").json()
    assert any("['gpu', 'region=eu']" in p and "no live runner" in p for p in health["problems"]), health


def test_media_kinds_can_require_runner_labels(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows, media_requires={"tts": ["gpu"]}) as gw:
        target = gw.start("bench-echo")
        response = gw.client.post(
            f"/api/gateway/runs/{target}/voice/tts", json={"text": "hello"}, params={"wait_s": 0}
        )
        assert response.status_code == 202, response.text
        job = gw.run(response.json()["child_run_id"])
        assert job["requires"] == ["gpu"] and job["blocked"]["reason"] == "no_runner_with_labels"


def test_a_schedule_gives_its_children_its_flow_control(gateway: Gateway, runner: object) -> None:
    body = {
        "bundle_id": "bench-echo",
        "input_data": {"message": "m1"},
        "interval": "0.2s",
        "repeat_count": 2,
        "priority": 4,
        "concurrency_key": "sched:{input.message}",
        "max_concurrent": 1,
    }
    response = gateway.client.post("/api/gateway/runs/schedule", json=body)
    assert response.status_code == 200, response.text
    parent = response.json()["run_id"]
    gateway.wait_for(parent, lambda view: view["status"] == "completed")
    children = gateway.client.get("/api/gateway/runs", params={"parent_run_id": parent}).json()["items"]
    assert len(children) == 2
    for child in children:
        child = gateway.wait_for(child["run_id"], lambda v: v["status"] == "completed")
        assert (child["priority"], child["concurrency_key"], child["blocked"]) == (4, "sched:m1", None)
    assert gateway.run(parent)["concurrency_key"] is None, "the parent is a timer, not the work"
    refused = gateway.client.post("/api/gateway/runs/schedule", json={**body, "overflow": "reject"})
    assert refused.status_code == 422 and "overflow" in refused.json()["detail"]
