"""Group commit: writes inside Database.group() commit together; a failing one is rolled back alone."""

from __future__ import annotations

import pytest

from shared_store import connect_store
from shared_store.inbox import append_command


def test_writes_in_a_group_commit_together_and_a_failure_is_isolated(db) -> None:
    with db.group():
        append_command(db, command_id="a", run_id="r", type="pause", payload={})
        with pytest.raises(ValueError), db.write() as conn:
            conn.execute(
                "INSERT INTO commands (command_id, run_id, type, payload, ts) VALUES ('b', 'r', 't', ?, 'now')",
                (b"{}",),
            )
            raise ValueError("this write fails after its insert")
        append_command(db, command_id="c", run_id="r", type="pause", payload={})
        # Not committed yet: another connection does not see the group's writes.
        reader = connect_store(getattr(db, "url", db.path))
        assert reader.query_one("SELECT count(*) FROM commands") == (0,)
        reader.close()
    assert [row[0] for row in db.query("SELECT command_id FROM commands ORDER BY seq")] == ["a", "c"]


def test_an_exception_escaping_the_group_rolls_everything_back(db) -> None:
    with pytest.raises(RuntimeError), db.group():
        append_command(db, command_id="a", run_id="r", type="pause", payload={})
        raise RuntimeError("crash before commit")
    assert db.query("SELECT command_id FROM commands") == []
