"""Run ids are UUID strings led by the time in microseconds (shared_store/ids.py): well-formed and
opaque to a client as before, distinct in their first 8 hex digits, and close in key order when made
close in time, so the B-trees a start writes take them at one place instead of scattered."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shared_store import Database, ids, migrate, starts
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.starts import enqueue_run


def test_a_run_id_is_a_well_formed_uuid_string() -> None:
    run_id = ids.new_run_id()
    parsed = uuid.UUID(run_id)
    assert str(parsed) == run_id and len(run_id) == 36 and run_id == run_id.lower()
    assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
    assert len({ids.new_run_id() for _ in range(50_000)}) == 50_000


def test_ids_sort_in_creation_order_and_differ_in_their_first_8_digits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start_ns = (395_000 * ids.WRAP_US + 1_000) * 1_000  # late 2023, just after a wrap
    clock = iter(range(start_ns, start_ns + 500 * 37_000, 37_000))  # 37 us apart
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock))
    made = [ids.new_run_id() for _ in range(500)]
    assert sorted(made) == made, "text order is creation order (within the 71.6-minute wrap)"
    assert len({run_id[:8] for run_id in made}) == 500, "the short form UIs show tells them apart"
    assert uuid.UUID(made[0]).int >> 96 == start_ns // 1_000 % ids.WRAP_US


def test_starts_take_fewer_wal_pages_than_with_random_ids(
    tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten group commits of ten starts on 2,000 runs: random UUID4 keys dirtied a leaf page apiece in
    the runs, run_states and session indexes; ids close in time share their pages."""

    def wal_frames(make_id: Callable[[], str]) -> tuple[int, list[str]]:
        monkeypatch.setattr(starts, "new_run_id", make_id)
        db = Database(tmp_path / f"{len(list(tmp_path.iterdir()))}.sqlite3")
        migrate(db)
        assert import_flows_dir(db, flows) == []
        resolved = resolve_workflow(db, bundle_id="bench-echo")
        with db.group():
            for _ in range(2_000):
                enqueue_run(db, resolved=resolved, input_data={"message": "x"})
        db.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        made = []
        for _ in range(10):
            with db.group():
                made += [
                    enqueue_run(db, resolved=resolved, input_data={"message": "x"}).run_id for _ in range(10)
                ]
        frames = (Path(f"{db.path}-wal").stat().st_size - 32) // (4096 + 24)
        db.close()
        return frames, made

    random_frames, _ = wal_frames(lambda: str(uuid.uuid4()))
    ordered_frames, made = wal_frames(ids.new_run_id)
    assert all(uuid.UUID(run_id).version == 8 for run_id in made), "starts use new_run_id"
    assert ordered_frames < 0.7 * random_frames, (ordered_frames, random_frames)
