"""Bad input gets the documented 4xx with a `detail`, and writes nothing (row counts unchanged)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest

from api_service.errors import STATUS_OF_KIND
from shared_store import Database, migrate
from shared_store.bundles import import_flows_dir
from shared_store.db import BusyPolicy
from shared_store.errors import KINDS, LeaseLost, StoreBusy, StoreError, UnknownRun

from .conftest import TOKEN, Gateway, make_settings, running_server


@pytest.fixture
def gw(lone_gateway: Gateway) -> Iterator[Gateway]:
    """The module's runner-less gateway, checked to be unchanged by each test."""
    before = lone_gateway.counts()
    yield lone_gateway
    assert lone_gateway.counts() == before, "a refused request wrote something"


def _check(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in str(detail), (word, detail)


@pytest.mark.parametrize(
    "path",
    ["/api/gateway/runs/start", "/api/gateway/commands", "/api/gateway/runs/ledger/batch",
     "/api/gateway/bundles/bench-echo/deprecate"],
)  # fmt: skip
def test_malformed_json_is_422_as_in_the_original(gw: Gateway, path: str) -> None:
    response = gw.client.post(path, content=b'{"bundle_id": ', headers={"content-type": "application/json"})
    _check(response, 422, "malformed JSON")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/gateway/runs/start", {"bundle_id": "bench-echo", "input_data": "nope"}, "$.input_data"),
        ("/api/gateway/runs/start", {"bundle_id": 7}, "$.bundle_id"),
        ("/api/gateway/runs/start", [1, 2], "object"),
        ("/api/gateway/commands", {"run_id": "r", "type": "pause"}, "command_id"),
        ("/api/gateway/commands", {"command_id": "", "run_id": "r", "type": "pause"}, "$.command_id"),
        ("/api/gateway/commands", {"command_id": 5, "run_id": "r", "type": "pause"}, "$.command_id"),
        ("/api/gateway/commands", {"command_id": "c", "run_id": "r", "type": "pause", "payload": []}, "$.payload"),
        ("/api/gateway/commands", {"command_id": "c", "run_id": "s", "type": "emit_event"}, "`name` - at `$.payload`"),
        ("/api/gateway/commands",
         {"command_id": "c", "run_id": "s", "type": "emit_event", "payload": {"name": "e", "scope": "galaxy"}},
         "$.payload.scope"),
        ("/api/gateway/runs/ledger/batch", {"runs": "r"}, "$.runs"),
        ("/api/gateway/runs/ledger/batch", {"runs": [{"run_id": "r", "after": -1}]}, "$.runs[0].after"),
        ("/api/gateway/runs/ledger/batch", {"runs": [], "limit": 0}, "$.limit"),
        ("/api/gateway/bundles/bench-echo/deprecate", {"reason": 3}, "$.reason"),
    ],
)  # fmt: skip
def test_wrong_shapes_are_422_naming_the_field(gw: Gateway, path: str, body: Any, field: str) -> None:
    _check(gw.client.post(path, json=body), 422, field)


def test_unknown_command_type_lists_the_valid_ones(gw: Gateway) -> None:
    response = gw.client.post(
        "/api/gateway/commands", json={"command_id": "c", "run_id": "r", "type": "explode"}
    )
    _check(response, 400, "explode", "pause", "resume", "cancel", "emit_event", "update_schedule")


@pytest.mark.parametrize(
    ("path", "known"),
    [
        ("/api/gateway/runs?colour=red", "limit, offset, status, workflow_id, session_id, parent_run_id"),
        ("/api/gateway/runs/x/ledger?page=2", "after, limit"),
        ("/api/gateway/bundles?everything=1", "all_versions, include_deprecated"),
        ("/api/gateway/runs/x?verbose=1", "takes none"),
    ],
)
def test_unknown_query_parameters_are_400_naming_the_known_ones(gw: Gateway, path: str, known: str) -> None:
    _check(gw.client.get(path), 400, "unknown query parameter", known)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/gateway/runs?limit=abc", "$.limit"),
        ("/api/gateway/runs?limit=0", "$.limit"),
        ("/api/gateway/runs?offset=-3", "$.offset"),
        ("/api/gateway/bundles?all_versions=maybe", "$.all_versions"),
    ],
)
def test_bad_query_values_are_422(gw: Gateway, path: str, field: str) -> None:
    _check(gw.client.get(path), 422, field)


def test_unknown_status_filter_is_400_listing_statuses(gw: Gateway) -> None:
    _check(gw.client.get("/api/gateway/runs?status=sleeping"), 400, "sleeping", "running", "cancelled")


def _body_of(size: int) -> bytes:
    head, tail = b'{"bundle_id": "bench-echo", "input_data": {"x": "', b'"}}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def test_body_over_the_default_10_mib_cap_is_413_and_writes_nothing(lone_gateway: Gateway) -> None:
    """The original's default cap (ABSTRACTGATEWAY_MAX_BODY_BYTES unset): 10 MiB; a body at it is served."""
    gw = lone_gateway
    assert gw.settings.max_body_bytes == 10 * 1024 * 1024
    before = gw.counts()
    over = gw.client.post(
        "/api/gateway/runs/start",
        content=_body_of(10 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    _check(over, 413, "10485760 byte limit")
    assert gw.counts() == before
    at_cap = gw.client.post(
        "/api/gateway/runs/start",
        content=_body_of(10 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    # A body at the cap passes the body limit and is decoded; its 10 MiB input_data is then over the
    # (smaller) input cap, which names itself (issue 20: 200 such starts once grew a db by 9.9 GB).
    _check(at_cap, 413, "ABSTRACTGATEWAY_MAX_INPUT_BYTES")
    assert gw.counts() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/gateway/runs/nope",
        "/api/gateway/runs/nope/ledger",
        "/api/gateway/runs/nope/ledger/stream",
        "/api/gateway/runs/nope/input_data",
        "/api/gateway/runs/nope/history_bundle",
        "/api/gateway/runs/nope/artifacts",
    ],
)
def test_unknown_runs_are_404(gw: Gateway, path: str) -> None:
    _check(gw.client.get(path), 404, "Run 'nope' not found")


def test_other_unknown_ids_are_404(gw: Gateway) -> None:
    _check(gw.client.get("/api/gateway/commands/nope"), 404, "Command 'nope' not found")
    _check(gw.client.get("/api/gateway/runs/nope/artifacts/a1/content"), 404, "a1")
    _check(gw.client.get("/api/gateway/bundles/nope"), 404, "Bundle 'nope' not found")
    _check(gw.client.get("/api/gateway/bundles/bench-echo/flows/nope/input_schema"), 404, "nope")
    _check(gw.client.delete("/api/gateway/bundles/nope"), 404, "nope")
    _check(gw.client.post("/api/gateway/bundles/nope/deprecate", json={}), 404, "nope")
    pause = {"command_id": "c-unknown", "run_id": "nope", "type": "pause"}
    _check(gw.client.post("/api/gateway/commands", json=pause), 404, "Run 'nope' not found")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"bundle_id": "nope"}, 404, ("Bundle 'nope' not found",)),
        ({"bundle_id": "bench-echo", "flow_id": "nope"}, 404, ("nope", "echo")),
        ({"flow_id": "nope@1:x"}, 404, ("nope",)),
        ({"bundle_id": "bench-echo@1.0.0", "bundle_version": "2.0.0"}, 400, ("1.0.0", "2.0.0")),
        ({}, 400, ("bundle_id",)),
    ],
)
def test_unresolvable_starts(gw: Gateway, body: dict[str, Any], status: int, words: tuple[str, ...]) -> None:
    _check(gw.client.post("/api/gateway/runs/start", json=body), status, *words)


def test_bad_cursors(gw: Gateway) -> None:
    run_id = gw.db.query_one("SELECT run_id FROM runs LIMIT 1")
    target = run_id[0] if run_id else "nope"
    expect = 422
    _check(gw.client.get(f"/api/gateway/runs/{target}/ledger?after=-1"), expect, "$.after")
    _check(gw.client.get(f"/api/gateway/runs/{target}/ledger?after=abc"), expect, "$.after")
    _check(gw.client.get(f"/api/gateway/runs/{target}/ledger?limit=0"), expect, "$.limit")
    _check(gw.client.get(f"/api/gateway/runs/{target}/ledger/stream?after=-5"), expect, "$.after")
    _check(gw.client.get(f"/api/gateway/runs/{target}/ledger/stream?heartbeat_s=0"), expect, "$.heartbeat_s")
    for bad in ("abc", "-1", "1.5", "\uff19", "1" * 40):
        header = {"Last-Event-ID": bad.encode()}
        response = gw.client.get(f"/api/gateway/runs/{target}/ledger/stream", headers=header)
        _check(response, 400, "Last-Event-ID")
    response = gw.client.get(f"/api/gateway/runs/{target}/ledger/stream", params={"last_event_id": "x"})
    _check(response, 400, "Last-Event-ID")


def test_method_not_allowed_is_json(gw: Gateway) -> None:
    _check(gw.client.put("/api/gateway/runs/start", json={}), 405, "Method Not Allowed")


# --- one error hierarchy: every store error has a kind, one table maps kinds to statuses ---------------
# Exceptions shared_store defines that are not store errors, each with the reason.
NOT_STORE_ERRORS = {
    # A cap on what a node writes, raised inside the runner's tick: the worker fails the run with it,
    # while a StoreError (the db failing, a lost lease) must propagate past the run. Never an API answer.
    "OutputTooLarge",
    # A bad ABSTRACTGATEWAY_* value, refused when a process starts (exit 2 naming the variable): no
    # request exists yet to answer.
    "SettingsError",
}


def _store_modules() -> list[Any]:
    import shared_store

    modules = []
    for info in pkgutil.walk_packages(shared_store.__path__, "shared_store."):
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError as exc:  # an optional backend's driver (the postgres extra) not installed
            assert info.name.startswith("shared_store.postgres"), (info.name, exc)
    return modules


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_store_error_has_a_kind_the_table_maps() -> None:
    modules = _store_modules()
    assert set(STATUS_OF_KIND) == set(KINDS)
    errors = {c for c in _subclasses(StoreError) | {StoreError} if c.__module__.startswith("shared_store")}
    assert len(errors) >= 25  # the walk found the store's errors, not just the base
    for cls in errors:
        assert cls.kind in KINDS, cls
        assert STATUS_OF_KIND[cls.kind] in (400, 404, 409, 422, 503), cls
    defined = {
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
    }
    # A private class (`_Refused`) is control flow inside its module: it never leaves it.
    strays = {cls.__name__ for cls in defined - errors if not cls.__name__.startswith("_")} - NOT_STORE_ERRORS
    assert not strays, f"store exceptions without a kind: {strays}"
    # the kinds the issue names, and the statuses the contract documents
    assert UnknownRun.kind == "not_found" and STATUS_OF_KIND["not_found"] == 404
    assert LeaseLost.kind == "lease_lost" and StoreBusy.kind == "unavailable"
    assert STATUS_OF_KIND["unavailable"] == 503


def test_each_kind_over_http_gets_its_status_and_changes_nothing(lone_gateway: Gateway) -> None:
    gw = lone_gateway  # the conflict needs a first start; the refused requests after it write nothing
    started = gw.client.post(
        "/api/gateway/runs/start",
        json={"bundle_id": "bench-echo", "input_data": {"n": 1}},
        headers={"Idempotency-Key": "kinds-1"},
    )
    assert started.status_code == 200, started.text
    before = gw.counts()
    # not_found: UnknownRun from the store (was a 503 "never the client's fault" on some routes)
    _check(gw.client.post("/api/gateway/runs/nope/rerun", json={}), 404, "Run 'nope' not found")
    # conflict: the idempotency key again, for another request (IdempotencyConflict)
    again = gw.client.post(
        "/api/gateway/runs/start",
        json={"bundle_id": "bench-echo", "input_data": {"n": 2}},
        headers={"Idempotency-Key": "kinds-1"},
    )
    _check(again, 409, "Idempotency-Key")
    # invalid: a schedule value the rule refuses (ScheduleInvalid), naming the field
    schedule = {"bundle_id": "bench-echo", "interval": "often"}
    _check(gw.client.post("/api/gateway/runs/schedule", json=schedule), 422, "interval")
    # bad_value: a cursor this server never gave out (FilterInvalid)
    _check(gw.client.get("/api/gateway/runs", params={"cursor": "garbage"}), 400, "cursor")
    assert gw.counts() == before


def test_unavailable_is_503_retry_after_and_writes_nothing(tmp_path: Path, flows: Path) -> None:
    """A write that cannot get the lock within the busy deadline: StoreBusy, kind unavailable."""
    db_path = tmp_path / "gateway.sqlite3"
    setup = Database(db_path)
    migrate(setup)
    assert import_flows_dir(setup, flows) == []
    setup.close()
    db = Database(db_path, busy=BusyPolicy(deadline_s=0.2))  # a short deadline, to be hit quickly
    holder = apsw.Connection(str(db_path))
    try:
        with (
            running_server(db, make_settings(tmp_path), tmp_path / "artifacts") as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ) as client,
        ):
            runs = int(db.query_one("SELECT count(*) FROM runs")[0])  # type: ignore[index]
            holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock past the deadline
            try:
                busy = client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"})
            finally:
                holder.execute("ROLLBACK")
            _check(busy, 503, "store unavailable")
            assert busy.headers["retry-after"] == "1"
            assert int(db.query_one("SELECT count(*) FROM runs")[0]) == runs  # type: ignore[index]
            assert client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).status_code == 200
    finally:
        holder.close()
        db.close()
