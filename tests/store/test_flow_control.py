"""Flow control in the store: label-aware claims, priority and fair order, slots, overflow, rate limits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from abstractruntime import RunState

from shared_store import LeaseHolder, reclaim_expired
from shared_store import queries as q
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.flow_control import (
    FAIR_STEP_S,
    FlowControlError,
    FlowRequest,
    FlowSettings,
    KeyFull,
    admit,
    declared_flow,
    parse_labels,
    parse_media_requires,
    render_key,
)
from shared_store.inbox import append_command
from shared_store.media_jobs import MEDIA_KINDS, enqueue_media_job
from shared_store.run_store import SqliteRunStore
from shared_store.starts import enqueue_run


@pytest.fixture
def start(db, flows: Path):
    assert import_flows_dir(db, flows) == []
    resolved = resolve_workflow(db, bundle_id="bench-echo")

    def start_run(input_data: dict | None = None, **fields: object) -> str:
        flow = FlowSettings.resolve(FlowRequest(**fields), input_data or {})  # type: ignore[arg-type]
        return enqueue_run(db, resolved=resolved, input_data=input_data or {}, flow=flow).run_id

    return start_run


def row(db, run_id: str, columns: str = "status, slot, hold") -> tuple:
    return db.query_one(f"SELECT {columns} FROM runs WHERE run_id = ?", (run_id,))


def claim_ids(holder: LeaseHolder, n: int = 100) -> list[str]:
    return [lease.run_id for lease in holder.claim(n)]


def end_and_release(db, holder: LeaseHolder, run_id: str, status: str = "completed") -> None:
    """What a runner does: a save that ends the run (fenced), then the lease back, settled."""
    with db.write() as conn:
        conn.execute("UPDATE runs SET status = ?, due_at = NULL WHERE run_id = ?", (status, run_id))
    assert holder.release(run_id, settle={"due_at": None, "paused": 0, "sub_run_id": None})


def test_claims_take_only_runs_whose_labels_the_runner_has(db, start) -> None:
    plain = start()
    gpu = start(requires=["gpu"])
    gpu_eu = start(requires=["region=eu", "gpu"])
    job = enqueue_media_job(
        db, kind="tts", request={"text": "hi"}, parent_run_id=None, requires=["gpu"]
    ).run_id
    assert row(db, gpu_eu, "requires") == ('["gpu","region=eu"]',)
    assert claim_ids(LeaseHolder(db, "cpu")) == [plain]
    assert sorted(claim_ids(LeaseHolder(db, "gpu-us", labels=["gpu", "region=us"]))) == sorted([gpu, job])
    assert claim_ids(LeaseHolder(db, "gpu-eu", labels=["region=eu", "gpu", "x"])) == [gpu_eu]


def test_claims_take_higher_priority_first_then_round_robin_across_keys(db, start) -> None:
    low = start(priority=1)
    a = [start(concurrency_key="a") for _ in range(3)]
    b = [start(concurrency_key="b") for _ in range(3)]
    urgent = start(priority=5)
    order = claim_ids(LeaseHolder(db, "r"))
    assert order[0] == urgent and order[-1] == low
    # a's runs were all enqueued first, yet a and b alternate (fair tags FAIR_STEP_S apart per key).
    assert order[1:-1] == [a[0], b[0], a[1], b[1], a[2], b[2]]
    tags = [row(db, r, "fair_tag")[0] for r in a]
    assert tags[1] - tags[0] == pytest.approx(FAIR_STEP_S)


def test_the_claim_order_column_follows_status_due_time_and_fair_tag(db, start) -> None:
    """claim_order is a real column kept by triggers (migration 0007): a queued run's fair tag, else
    its due time; every write of those columns (or of claim_order itself) keeps it so."""
    keyed, plain = start(concurrency_key="a"), start()
    tag, due = row(db, keyed, "fair_tag, due_at")
    assert tag is not None and due is not None
    assert row(db, keyed, "claim_order") == (tag,)
    assert row(db, plain, "claim_order") == (row(db, plain, "due_at")[0],)
    with db.write() as conn:
        conn.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (keyed,))
    assert row(db, keyed, "claim_order") == (due,)  # not queued: its due time
    with db.write() as conn:
        conn.execute("UPDATE runs SET due_at = 7.0 WHERE run_id = ?", (keyed,))
        conn.execute("UPDATE runs SET status = 'queued', fair_tag = NULL WHERE run_id = ?", (plain,))
    assert row(db, keyed, "claim_order") == (7.0,)
    assert row(db, plain, "claim_order") == row(db, plain, "due_at")
    with db.write() as conn:
        conn.execute("UPDATE runs SET due_at = NULL WHERE run_id = ?", (keyed,))
        conn.execute("UPDATE runs SET claim_order = 1.0 WHERE run_id = ?", (plain,))
    assert row(db, keyed, "claim_order") == (None,)
    assert row(db, plain, "claim_order") == row(db, plain, "due_at")


def test_every_insert_of_a_run_writes_its_claim_order(db) -> None:
    """No trigger sets claim_order on insert (migration 0013): every INSERT INTO runs of the store names
    it, and a run the RunStore creates (the upsert's insert branch) is in claim order by its due time."""
    inserts = {n: t for n, t in vars(q).items() if isinstance(t, str) and "INSERT INTO runs (" in t}
    assert {
        "ENQUEUE_RUN",
        "ENQUEUE_CHILD_RUN",
        "SAVE_RUN_FENCED",
        "CREATE_RUN_UNLEASED",
        "IMPORT_RUN",
    } <= set(inserts)
    unnamed = [n for n, t in inserts.items() if "claim_order" not in t.split(")", 1)[0]]
    assert unnamed == [], f"these insert runs without their claim order: {unnamed}"
    if db.backend == "sqlite":  # (PostgreSQL's BEFORE trigger sets it on insert too, at no such cost)
        triggers = db.query("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'runs'")
        assert "runs_claim_order_inserted" not in {t[0] for t in triggers}
    SqliteRunStore(db).save(RunState.new(workflow_id="w", entry_node="n", run_id="created"))
    due, order = row(db, "created", "due_at, claim_order")
    assert due is not None and order == due


def test_a_key_lets_max_concurrent_runs_hold_a_slot_and_hands_on_a_freed_one(db, start) -> None:
    runs = [start({"user": 7}, concurrency_key="user:{input.user}", max_concurrent=2) for _ in range(4)]
    assert [row(db, r) for r in runs] == [("queued", 1, 0)] * 2 + [("queued", 0, 1)] * 2
    holder = LeaseHolder(db, "r")
    assert claim_ids(holder) == runs[:2], "held runs are not claimable"
    assert all(admit(db, holder, r).go for r in runs[:2])
    end_and_release(db, holder, runs[0])
    assert row(db, runs[0]) == ("completed", 0, 0)
    assert row(db, runs[2]) == ("queued", 1, 0), "the freed slot went to the next held run"
    assert row(db, runs[3]) == ("queued", 0, 1)
    assert claim_ids(holder) == [runs[2]]


def test_a_run_that_ends_while_leased_keeps_its_slot_until_its_lease_is_released(db, start) -> None:
    first, second = (start(concurrency_key="k", max_concurrent=1) for _ in range(2))
    holder = LeaseHolder(db, "r", lease_s=0.01)
    assert claim_ids(holder) == [first]
    with db.write() as conn:  # the save that completes it: its closing ledger records come after
        conn.execute("UPDATE runs SET status = 'completed' WHERE run_id = ?", (first,))
    assert row(db, second) == ("queued", 0, 1)
    # Its runner dies instead of releasing: reclaiming the expired lease frees the slot.
    time.sleep(0.05)
    assert reclaim_expired(db) == 1
    assert row(db, first) == ("completed", 0, 0) and row(db, second) == ("queued", 1, 0)


def test_a_waiting_run_gives_its_slot_back_unless_its_key_counts_waiting_runs(db, start) -> None:
    for key, count_waiting, kept in (("free", False, 0), ("counted", True, 1)):
        run_id = start(concurrency_key=key, max_concurrent=1, count_waiting=count_waiting)
        holder = LeaseHolder(db, f"r-{key}")
        assert claim_ids(holder) == [run_id]
        with db.write() as conn:
            conn.execute("UPDATE runs SET status = 'waiting' WHERE run_id = ?", (run_id,))
        holder.release(run_id, settle={"due_at": None, "paused": 0, "sub_run_id": None})
        assert row(db, run_id) == ("waiting", kept, 0)
    # Woken up (a command), a waiting run without a slot must take one before it is worked on.
    free = db.query_one("SELECT run_id FROM runs WHERE concurrency_key = 'free'")[0]
    blocker = start(concurrency_key="free")  # held: the key is free again, so it takes the slot
    assert row(db, blocker) == ("queued", 1, 0)
    append_command(db, command_id="c1", run_id=free, type="pause", payload={})
    holder = LeaseHolder(db, "r2")
    assert free in claim_ids(holder)
    assert admit(db, holder, free).why == "held"
    holder.release(free)
    assert row(db, free) == ("waiting", 0, 1)


def test_reject_answers_key_full_and_writes_nothing(db, start) -> None:
    start(concurrency_key="k", max_concurrent=1)
    tables = ("runs", "run_states", "run_start_keys", "flow_keys", "commands")

    def counts() -> list[int]:
        return [db.query_one(f"SELECT count(*) FROM {t}")[0] for t in tables]

    before = counts()
    tag_before = db.query_one("SELECT last_tag, max_concurrent FROM flow_keys WHERE key = 'k'")
    resolved = resolve_workflow(db, bundle_id="bench-echo")
    flow = FlowSettings.resolve(FlowRequest(concurrency_key="k", overflow="reject"), {})
    with pytest.raises(KeyFull, match="has 1 of max_concurrent 1 runs in flight"):
        enqueue_run(db, resolved=resolved, input_data={}, flow=flow, idempotency_key="idem-1")
    assert counts() == before
    assert db.query_one("SELECT last_tag, max_concurrent FROM flow_keys WHERE key = 'k'") == tag_before


def test_cancel_oldest_and_cancel_newest_cancel_through_the_inbox(db, start) -> None:
    oldest = start(concurrency_key="o", max_concurrent=1)
    newer = start(concurrency_key="o", overflow="cancel_oldest")
    assert row(db, newer) == ("queued", 0, 1)
    (payload,) = db.query_one("SELECT payload FROM commands WHERE run_id = ? AND type = 'cancel'", (oldest,))
    assert b"cancel_oldest" in payload and newer.encode() in payload
    second = start(concurrency_key="o", max_concurrent=2, overflow="cancel_oldest")
    # A raised limit makes room at once, for the older held run first; nothing more is cancelled.
    assert (row(db, newer), row(db, second)) == (("queued", 1, 0), ("queued", 0, 1))
    third = start(concurrency_key="o", overflow="cancel_oldest")
    cancelled = db.query("SELECT run_id FROM commands WHERE type = 'cancel' ORDER BY seq")
    assert cancelled == [(oldest,), (newer,)], "the next oldest not already being cancelled"
    assert row(db, third) == ("queued", 0, 1)
    start(concurrency_key="n", max_concurrent=1)
    newest = start(concurrency_key="n", overflow="cancel_newest")
    assert db.query_one("SELECT count(*) FROM commands WHERE run_id = ? AND type = 'cancel'", (newest,)) == (
        1,
    )
    # A cancel reaches a held run: it leaves the hold and is claimed to be cancelled, taking no slot.
    assert row(db, newest) == ("queued", 0, 0)
    holder = LeaseHolder(db, "r")
    assert newest in claim_ids(holder) and admit(db, holder, newest).go
    assert row(db, newest) == ("queued", 0, 0)


def test_a_start_beyond_its_keys_rate_is_deferred_until_it_is_eligible(db, start) -> None:
    runs = [start(concurrency_key="quota", rate_limit=2, rate_window_s=10.0) for _ in range(3)]
    holder = LeaseHolder(db, "r")
    assert claim_ids(holder) == runs
    t = time.time()
    assert admit(db, holder, runs[0], now=t).go and admit(db, holder, runs[1], now=t + 1).go
    assert admit(db, holder, runs[2], now=t + 2).why == "rate"
    assert row(db, runs[2], "due_at, fair_tag, begun_at") == (t + 10, None, None)
    holder.release(runs[2])
    assert admit(db, holder, runs[0], now=t + 3).go, "a start already begun is not counted again"
    assert claim_ids(LeaseHolder(db, "r2")) == [], "not due before it is eligible"


def test_flow_values_are_checked_with_a_reason() -> None:
    assert render_key("user:{input.user.id}/{ input.n }", {"user": {"id": "u1"}, "n": 3}) == "user:u1/3"
    for template, data, message in (
        ("user:{input.missing}", {}, "the input has no 'missing'"),
        ("user:{user}", {}, "must name an input field"),
        ("user:{input.obj}", {"obj": {}}, "string, number or boolean"),
    ):
        with pytest.raises(FlowControlError, match=message):
            render_key(template, data)
    with pytest.raises(FlowControlError, match="need a concurrency_key"):
        FlowSettings.resolve(FlowRequest(max_concurrent=2), {})
    with pytest.raises(FlowControlError, match="go together"):
        FlowSettings.resolve(FlowRequest(concurrency_key="k", rate_limit=2), {})
    with pytest.raises(FlowControlError, match="priority"):
        FlowRequest(priority=9).checked()
    with pytest.raises(FlowControlError, match="label"):
        parse_labels("gpu,bad label!")
    assert parse_labels(" gpu, region=eu gpu") == ["gpu", "region=eu"]
    assert parse_media_requires('{"image_generate": ["gpu"]}', MEDIA_KINDS) == {"image_generate": ["gpu"]}
    with pytest.raises(FlowControlError, match="unknown media kind"):
        parse_media_requires('{"imagez": ["gpu"]}', MEDIA_KINDS)


def test_a_bundle_declares_flow_control_and_a_request_overrides_it() -> None:
    manifest = {
        "metadata": {"flow_control": {"requires": ["gpu"], "priority": 2}},
        "entrypoints": [
            {"flow_id": "f", "flow_control": {"concurrency_key": "t:{input.t}", "max_concurrent": 1}}
        ],
    }
    declared = declared_flow(manifest, "f")
    assert declared == FlowRequest(
        priority=2, concurrency_key="t:{input.t}", max_concurrent=1, requires=["gpu"]
    )
    merged = FlowRequest(priority=5).over(declared)
    assert (merged.priority, merged.requires, merged.max_concurrent) == (5, ["gpu"], 1)
    with pytest.raises(FlowControlError, match="unknown field 'prio'"):
        declared_flow({"metadata": {"flow_control": {"prio": 1}}}, "f")
