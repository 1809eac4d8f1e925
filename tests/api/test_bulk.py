"""Bulk commands over a real Hypercorn and runner process: a filter's runs get ordinary commands,
expanded by the runner in batches, with exact counts; idempotent by bulk_id."""

from __future__ import annotations

import time
import uuid

from .conftest import Gateway


def _bulk(gateway: Gateway, bulk_id: str, *, tries: int = 3_000) -> dict:
    """Poll the operation until it is expanded and every command has an outcome."""
    status: dict = {}
    for _ in range(tries):
        response = gateway.client.get(f"/api/gateway/commands/bulk/{bulk_id}")
        assert response.status_code == 200, response.text
        status = response.json()
        if status["status"] == "expanded" and status["pending"] == 0:
            return status
        time.sleep(0.05)
    raise AssertionError(f"bulk {bulk_id} never finished: {status}")


def _count(gateway: Gateway, **params: object) -> int:
    response = gateway.client.get("/api/gateway/runs", params={"limit": 10_000, **params})
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


def test_bulk_cancel_of_500_runs_has_exact_counts(gateway: Gateway, runner: object) -> None:
    target, bystander = f"bulk-{uuid.uuid4().hex[:8]}", f"keep-{uuid.uuid4().hex[:8]}"
    targets = [gateway.start("bench-ask", tags=[target]) for _ in range(500)]
    kept = [gateway.start("bench-ask", tags=[bystander]) for _ in range(20)]
    bulk_id = f"cancel-{uuid.uuid4().hex}"
    body = {"bulk_id": bulk_id, "type": "cancel", "filter": {"tag": target}, "payload": {"reason": "bulk"}}
    response = gateway.client.post("/api/gateway/commands/bulk", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is False
    # A run started after the request is not the operation's.
    late = gateway.start("bench-ask", tags=[target])

    done = _bulk(gateway, bulk_id)
    assert (done["matched"], done["applied"], done["rejected"]) == (500, 500, 0), done
    assert _count(gateway, tag=target, status="cancelled") == 500
    assert gateway.run(late)["status"] != "cancelled"
    assert _count(gateway, tag=bystander, status="cancelled") == 0
    assert {gateway.run(run_id)["status"] for run_id in kept} <= {"running", "waiting"}
    assert gateway.run(targets[0])["status"] == "cancelled"

    # The same bulk_id again: the same operation, no second command for any run.
    commands = int(gateway.db.query_one("SELECT count(*) FROM commands")[0])  # type: ignore[index]
    again = gateway.client.post("/api/gateway/commands/bulk", json=body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["matched"] == 500
    time.sleep(0.5)  # room for a runner to (wrongly) expand it again
    assert int(gateway.db.query_one("SELECT count(*) FROM commands")[0]) == commands  # type: ignore[index]
    other = gateway.client.post("/api/gateway/commands/bulk", json={**body, "type": "pause"})
    assert other.status_code == 409


def test_bulk_pause_then_resume_by_metadata(gateway: Gateway, runner: object) -> None:
    marker = uuid.uuid4().hex
    # bench-tick waits (until) between ticks: a pausable wait (an ask_user wait ignores pause).
    runs = [
        gateway.start("bench-tick", {"n": 100_000, "delay": 0.2}, metadata={"batch": marker})
        for _ in range(5)
    ]
    for run_id in runs:
        gateway.wait_for(run_id, lambda v: v["status"] == "waiting")
    paused = f"pause-{marker}"
    body = {"bulk_id": paused, "type": "pause", "filter": {"metadata": {"batch": marker}}}
    assert gateway.client.post("/api/gateway/commands/bulk", json=body).status_code == 200
    assert _bulk(gateway, paused)["applied"] == 5
    assert all(gateway.run(run_id)["paused"] for run_id in runs)
    resumed = f"resume-{marker}"
    body = {"bulk_id": resumed, "type": "resume", "filter": {"metadata.batch": marker, "status": "waiting"}}
    assert gateway.client.post("/api/gateway/commands/bulk", json=body).status_code == 200
    assert _bulk(gateway, resumed)["applied"] == 5
    assert not any(gateway.run(run_id)["paused"] for run_id in runs)
    ended = f"cancel-{marker}"
    body = {"bulk_id": ended, "type": "cancel", "filter": {"metadata.batch": marker}}
    assert gateway.client.post("/api/gateway/commands/bulk", json=body).status_code == 200
    assert _bulk(gateway, ended)["applied"] == 5
    assert all(gateway.run(run_id)["status"] == "cancelled" for run_id in runs)


def test_bad_bulk_requests_write_nothing(gateway: Gateway) -> None:
    def written() -> tuple[int, int]:  # (a runner may still append ledger records of other tests' runs)
        return gateway.counts()["commands"], int(gateway.db.query_one("SELECT count(*) FROM bulk_ops")[0])  # type: ignore[index]

    before = written()
    for body, status in [
        ({"bulk_id": "b1", "type": "cancel", "filter": {}}, 422),
        ({"bulk_id": "b1", "type": "emit_event", "filter": {"tag": "x"}}, 422),
        ({"bulk_id": "b1", "type": "cancel", "filter": {"colour": "red"}}, 422),
        ({"bulk_id": "b1", "type": "cancel", "filter": {"status": "sleeping"}}, 422),
        ({"bulk_id": "no spaces", "type": "cancel", "filter": {"tag": "x"}}, 422),
        ({"bulk_id": "b1", "type": "pause", "filter": {"tag": "x"}, "payload": {"reason": 5}}, 422),
    ]:
        response = gateway.client.post("/api/gateway/commands/bulk", json=body)
        assert response.status_code == status, (body, response.text)
    assert gateway.client.get("/api/gateway/commands/bulk/nope").status_code == 404
    assert written() == before
