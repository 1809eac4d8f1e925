"""The runs list over a real Hypercorn and runner process: tags, metadata, time and status filters,
summaries without output, keyset paging while new runs arrive, limit clamping."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from shared_store.run_list import PAGE_MAX

from .conftest import TERMINAL, Gateway


def _list(gateway: Gateway, **params: object) -> dict:
    response = gateway.client.get("/api/gateway/runs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(gateway: Gateway, **params: object) -> list[str]:
    return [item["run_id"] for item in _list(gateway, **params)["items"]]


def test_filters_by_tag_metadata_status_time_and_prefix(gateway: Gateway, runner: object) -> None:
    label = f"t-{uuid.uuid4().hex[:8]}"
    before = datetime.now(UTC).isoformat()
    echo = [
        gateway.start("bench-echo", {"message": f"m{i}"}, tags=[label, f"n{i % 2}"],
                      metadata={"customer": f"c{i % 3}", "tier": i})
        for i in range(6)
    ]  # fmt: skip
    asking = gateway.start("bench-ask", tags=[label, "ask"], metadata={"customer": "c0"})
    for run_id in echo:
        gateway.wait_for(run_id, lambda v: v["status"] in TERMINAL)
    gateway.wait_for(asking, lambda v: v["status"] == "waiting")
    after = datetime.now(UTC).isoformat()

    # Newest first; every run of the label, and nothing else.
    assert _ids(gateway, tag=label) == [asking, *reversed(echo)]
    assert set(_ids(gateway, tag=[label, "n1"])) == {echo[1], echo[3], echo[5]}
    assert set(_ids(gateway, tag=label, **{"metadata.customer": "c0"})) == {echo[0], echo[3], asking}
    assert _ids(gateway, **{"metadata.customer": "c0", "metadata.tier": "3"}) == [echo[3]]
    assert _ids(gateway, tag=label, status="waiting") == [asking]
    assert set(_ids(gateway, tag=label, status=["waiting", "completed"])) == {asking, *echo}
    assert _ids(gateway, tag=label, status="failed") == []
    assert set(_ids(gateway, tag=label, created_after=before, created_before=after)) == {asking, *echo}
    assert _ids(gateway, tag=label, created_before=before) == []
    assert set(_ids(gateway, tag=label, ended_after=before)) == set(echo)  # the waiting one has not ended
    assert _ids(gateway, tag=label, q=asking[:8]) == [asking]
    assert set(_ids(gateway, tag=label, q="bench-echo@")) == set(echo)
    assert asking in _ids(gateway, q=asking[:12], limit=PAGE_MAX)

    # Summaries carry no output; the run itself does, with its tags and metadata.
    listed = _list(gateway, tag=label, status="waiting")["items"][0]
    assert "output" not in listed and listed["tags"] == [label, "ask"]
    assert listed["waiting"]["prompt"] == "continue?" and listed["metadata"] == {"customer": "c0"}
    done = _list(gateway, tag=label, status="completed", limit=1)["items"][0]
    assert "output" not in done and done["status"] == "completed"
    view = gateway.run(echo[0])
    assert view["output"]["result"] == "m0" and view["tags"] == [label, "n0"]
    assert view["metadata"] == {"customer": "c0", "tier": 0}


def test_cursor_pages_are_stable_while_runs_arrive(gateway: Gateway) -> None:
    label = f"page-{uuid.uuid4().hex[:8]}"
    first = [gateway.start("bench-echo", {"message": "x"}, tags=[label]) for _ in range(11)]
    seen: list[str] = []
    arrived: list[str] = []
    page = _list(gateway, tag=label, limit=3)
    while True:
        seen += [item["run_id"] for item in page["items"]]
        # New runs between pages: newer than every cursor, they never shift the pages that follow.
        arrived.append(gateway.start("bench-echo", {"message": "late"}, tags=[label]))
        if page["next_cursor"] is None:
            break
        page = _list(gateway, tag=label, limit=3, cursor=page["next_cursor"])
    assert seen == list(reversed(first)), "every run exactly once, newest first"
    # The newest page now starts with the arrivals.
    assert _ids(gateway, tag=label, limit=len(arrived)) == list(reversed(arrived))
    # offset paging still works beside it, and says where to continue.
    by_offset = _list(gateway, tag=label, limit=4, offset=4)
    assert by_offset["next_offset"] == 8 and len(by_offset["items"]) == 4
    # The original's fields beside ours: this page's size and whether another follows.
    assert by_offset["count"] == 4 and by_offset["has_more"] is True
    last = _list(gateway, tag=label, limit=100)
    assert last["count"] == len(first) + len(arrived) and last["has_more"] is False


def test_limit_is_clamped_and_bad_values_are_refused(gateway: Gateway) -> None:
    assert _list(gateway, limit=10_000_000)["limit"] == PAGE_MAX
    # A runner may still be appending ledger records of earlier tests' runs: compare what these write.
    written = ("runs", "run_start_keys", "commands")
    before = {k: v for k, v in gateway.counts().items() if k in written}
    for params, status, words in [
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
        ({"cursor": "WyJ4IiwieSJd", "offset": 3}, 400, "cursor or offset"),
        ({"status": ["running", "sleeping"]}, 400, "sleeping"),
        ({"created_after": "yesterday"}, 400, "created_after"),
        ({"metadata.": "x"}, 400, "metadata"),
        ({"limit": 0}, 422, "limit"),
    ]:
        response = gateway.client.get("/api/gateway/runs", params=params)
        assert response.status_code == status, (params, response.text)
        assert words in response.text, (params, response.text)
    too_big = {"k": "v" * 5_000}
    response = gateway.client.post(
        "/api/gateway/runs/start", json={"bundle_id": "bench-echo", "metadata": too_big}
    )
    assert response.status_code == 422 and "metadata" in response.text
    response = gateway.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo", "tags": [""]})
    assert response.status_code == 422
    assert {k: v for k, v in gateway.counts().items() if k in written} == before


def test_schedule_children_inherit_tags_and_metadata(gateway: Gateway, runner: object) -> None:
    label = f"sched-{uuid.uuid4().hex[:8]}"
    response = gateway.client.post(
        "/api/gateway/runs/schedule",
        json={"bundle_id": "bench-echo", "input_data": {"message": "tick"}, "interval": "0.2s",
              "repeat_count": 2, "tags": [label], "metadata": {"owner": "ops"}},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    parent = response.json()["run_id"]
    for _ in range(1_500):
        children = _ids(gateway, parent_run_id=parent)
        if len(children) == 2:
            break
        time.sleep(0.02)
    assert len(children) == 2
    assert set(_ids(gateway, tag=label)) == {parent, *children}
    assert set(_ids(gateway, **{"metadata.owner": "ops"}, tag=label)) == {parent, *children}
    scheduled = _list(gateway, tag=label, q=parent)["items"][0]
    assert scheduled["is_scheduled"] is True and scheduled["schedule"]["fired_count"] >= 1
    assert datetime.fromisoformat(scheduled["created_at"]) > datetime.now(UTC) - timedelta(hours=1)
