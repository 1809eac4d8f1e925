"""`limit` above a list's page maximum is served up to it, never refused (clients of the original ask
`limit=10000` or more and read `items`); `next_after` / `next_offset` continue; below 1 is a 422."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from abstractruntime.core.models import RunState, StepRecord

from api_service.schemas import LEDGER_BATCH_RECORDS_MAX, LEDGER_PAGE_MAX, RUNS_PAGE_MAX
from shared_store.artifact_store import SqliteArtifactStore
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore

from .conftest import Gateway, make_gateway

RECORDS = LEDGER_PAGE_MAX + 5  # one page more than the maximum


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[tuple[Gateway, str, int]]:
    """An API over a db holding a run with more ledger records than a page can carry, appended
    through the store abstractruntime writes with (a runner would take ~40 s to tick that many)."""
    with make_gateway(tmp_path_factory.mktemp("limits"), flows) as gw:
        runs, ledger = SqliteRunStore(gw.db), SqliteLedgerStore(gw.db)
        run = RunState.new(workflow_id="bench-loop@1.0.0:loop", entry_node="start")
        runs.save(run)
        for i in range(RECORDS):
            ledger.append(StepRecord.start(run=run, node_id=f"n{i}", effect=None))
        yield gw, run.run_id, RECORDS


def test_ledger_limit_above_the_maximum_is_served_up_to_it(long_run: tuple[Gateway, str, int]) -> None:
    gw, run_id, total = long_run
    assert total > LEDGER_PAGE_MAX
    for asked in (10_000, 1_000_000, 2**63 - 1):
        page = gw.client.get(f"/api/gateway/runs/{run_id}/ledger", params={"after": 0, "limit": asked})
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) == min(asked, LEDGER_PAGE_MAX)
        assert body["next_after"] == len(body["items"])
    rest = gw.client.get(
        f"/api/gateway/runs/{run_id}/ledger", params={"after": LEDGER_PAGE_MAX, "limit": 10**6}
    ).json()
    assert len(rest["items"]) == total - LEDGER_PAGE_MAX and rest["next_after"] == total
    assert gw.client.get(f"/api/gateway/runs/{run_id}/ledger?limit=0").status_code == 422
    assert gw.client.get(f"/api/gateway/runs/{run_id}/ledger?limit=-5").status_code == 422


def test_ledger_batch_limit_is_clamped_per_run_and_per_batch(long_run: tuple[Gateway, str, int]) -> None:
    gw, run_id, _ = long_run
    one = gw.client.post(
        "/api/gateway/runs/ledger/batch", json={"limit": 10**9, "runs": [{"run_id": run_id, "after": 0}]}
    )
    assert one.status_code == 200, one.text
    assert len(one.json()["runs"][run_id]["items"]) == LEDGER_PAGE_MAX
    # 500 entries share the batch's budget: each page is smaller, and its next_after continues.
    many = [{"run_id": run_id, "after": 0}] + [{"run_id": f"nope-{i}", "after": 0} for i in range(499)]
    batch = gw.client.post("/api/gateway/runs/ledger/batch", json={"limit": 10_000, "runs": many}).json()
    page = batch["runs"][run_id]
    assert len(page["items"]) == LEDGER_BATCH_RECORDS_MAX // 500 == page["next_after"]
    assert batch["runs"]["nope-3"]["items"] == [] and "not found" in batch["runs"]["nope-3"]["error"]
    refused = gw.client.post("/api/gateway/runs/ledger/batch", json={"limit": 0, "runs": many[:1]})
    assert refused.status_code == 422


def test_runs_list_limit_is_clamped_with_next_offset(long_run: tuple[Gateway, str, int]) -> None:
    gw, _, _ = long_run
    for _ in range(3):
        gw.start("bench-echo")
    listed = gw.client.get("/api/gateway/runs", params={"limit": 1_000_000})
    assert listed.status_code == 200, listed.text
    assert listed.json()["limit"] == RUNS_PAGE_MAX and len(listed.json()["items"]) == 4
    paged = gw.client.get("/api/gateway/runs", params={"limit": 2}).json()
    assert len(paged["items"]) == 2 and paged["next_offset"] == 2
    assert gw.client.get("/api/gateway/runs?limit=0").status_code == 422


def test_artifacts_limit_is_clamped_and_pages_continue(long_run: tuple[Gateway, str, int]) -> None:
    gw, run_id, _ = long_run
    store = SqliteArtifactStore(gw.db, gw.db_path.parent / "artifacts")
    made = [
        store.store(f"blob {i}".encode(), content_type="text/plain", run_id=run_id).artifact_id
        for i in range(3)
    ]
    everything = gw.client.get(f"/api/gateway/runs/{run_id}/artifacts", params={"limit": 10**7})
    assert everything.status_code == 200, everything.text
    assert sorted(item["artifact_id"] for item in everything.json()["items"]) == sorted(made)
    first = gw.client.get(f"/api/gateway/runs/{run_id}/artifacts", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and (first["next_offset"], first["has_more"]) == (2, True)
    rest = gw.client.get(f"/api/gateway/runs/{run_id}/artifacts", params={"limit": 2, "offset": 2}).json()
    assert len(rest["items"]) == 1 and (rest["next_offset"], rest["has_more"]) == (None, False)
    exact = gw.client.get(f"/api/gateway/runs/{run_id}/artifacts", params={"limit": 3}).json()
    assert len(exact["items"]) == 3 and (exact["next_offset"], exact["has_more"]) == (None, False)
    assert {i["artifact_id"] for i in first["items"] + rest["items"]} == set(made)
    assert gw.client.get(f"/api/gateway/runs/{run_id}/artifacts?limit=0").status_code == 422
