"""Rerun over a real Hypercorn and runner process: the same version (or the newest) with the same or
patched input, linked both ways, idempotent by Idempotency-Key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TERMINAL, Gateway, make_gateway, start_runner, stop_process
from .test_bundles import bundle_bytes, upload


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Gateway]:
    """Its own gateway and runner: this module uploads a newer bench-echo, which other modules'
    version-less starts must not pick up."""
    with make_gateway(tmp_path_factory.mktemp("rerun"), flows) as gw:
        process = start_runner(gw.db_path, flows)
        try:
            yield gw
        finally:
            stop_process(process)


def _rerun(gw: Gateway, run_id: str, body: dict | None = None, **headers: str) -> dict:
    response = gw.client.post(f"/api/gateway/runs/{run_id}/rerun", json=body or {}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _done(gw: Gateway, run_id: str) -> dict:
    return gw.wait_for(run_id, lambda v: v["status"] in TERMINAL)


def test_rerun_links_both_ways_and_patches_input(own: Gateway, flows: Path) -> None:
    original = own.start(
        "bench-echo", {"message": "first", "other": 1}, tags=["nightly"], metadata={"k": "v"}
    )
    assert _done(own, original)["output"]["result"] == "first"

    same = _rerun(own, original)
    assert same["rerun_of"] == original
    assert same["resolved_workflow"]["workflow_id"] == "bench-echo@1.0.0:echo"
    view = _done(own, same["run_id"])
    assert view["output"]["result"] == "first" and view["rerun_of"] == original
    assert view["tags"] == ["nightly"] and view["metadata"] == {"k": "v"}

    patched = _rerun(own, original, {"input_data": {"message": "second"}})
    assert _done(own, patched["run_id"])["output"]["result"] == "second"
    inputs = own.client.get(f"/api/gateway/runs/{patched['run_id']}/input_data").json()
    assert inputs["input_data"] == {"message": "second", "other": 1}

    assert own.run(original)["reruns"] == [same["run_id"], patched["run_id"]]

    # latest: the bundle's newest version; without it the original's version stays.
    assert upload(own, bundle_bytes(flows, version="9.0.0")).status_code == 200
    newest = _rerun(own, original, {"latest": True})
    assert newest["resolved_workflow"]["bundle_version"] == "9.0.0"
    assert _done(own, newest["run_id"])["workflow_id"] == "bench-echo@9.0.0:echo"
    assert _rerun(own, original)["resolved_workflow"]["bundle_version"] == "1.0.0"


def test_rerun_idempotency_key_and_refusals(own: Gateway) -> None:
    original = own.start("bench-echo", {"message": "x"})
    first = _rerun(own, original, {"input_data": {"message": "y"}}, **{"Idempotency-Key": "rerun-key-1"})
    again = _rerun(own, original, {"input_data": {"message": "y"}}, **{"Idempotency-Key": "rerun-key-1"})
    assert again["run_id"] == first["run_id"]
    conflict = own.client.post(
        f"/api/gateway/runs/{original}/rerun",
        json={"input_data": {"message": "z"}},
        headers={"Idempotency-Key": "rerun-key-1"},
    )
    assert conflict.status_code == 409
    assert own.client.post("/api/gateway/runs/nope/rerun", json={}).status_code == 404
    assert own.client.post(f"/api/gateway/runs/{original}/rerun", json={"latest": "yes"}).status_code == 422
    scheduled = own.client.post(
        "/api/gateway/runs/schedule", json={"bundle_id": "bench-echo", "start_at": "2099-01-01T00:00:00Z"}
    ).json()["run_id"]
    # (The runner keeps appending ledger records of earlier runs: compare what a rerun would write.)
    before = {k: v for k, v in own.counts().items() if k in ("runs", "run_start_keys", "commands")}
    refused = own.client.post(f"/api/gateway/runs/{scheduled}/rerun", json={})
    assert refused.status_code == 409 and "scheduled" in refused.text
    assert {k: v for k, v in own.counts().items() if k in before} == before
