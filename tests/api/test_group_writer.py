"""The API's one writer thread (api_service/writer.py): a write alone commits in its own transaction,
writes queued together share one, and in both a failing write changes nothing and fails alone."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import apsw
import pytest

from api_service.writer import GroupWriter
from shared_store import Database


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "w.sqlite3")
    with database.write() as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    yield database
    database.close()


def _insert(db: Database, key: str, fail: bool = False) -> str:
    conn = db.connection()
    conn.execute("INSERT INTO t VALUES (?)", (key,))
    if fail:
        raise ValueError(f"refused {key}")
    return key


def _keys(db: Database) -> list[str]:
    return [row[0] for row in db.query("SELECT k FROM t ORDER BY k")]


def test_a_write_alone_commits_or_leaves_nothing(db: Database) -> None:
    writer = GroupWriter()

    async def main() -> None:
        assert await writer.submit(db, lambda: _insert(db, "a")) == "a"
        with pytest.raises(ValueError, match="refused b"):
            await writer.submit(db, lambda: _insert(db, "b", fail=True))
        with pytest.raises(apsw.ConstraintError):  # a failure from SQLite itself, the same way
            await writer.submit(db, lambda: _insert(db, "a"))

    asyncio.run(main())
    assert _keys(db) == ["a"]
    assert (writer.groups, writer.writes) == (3, 3)


def _vetoed_at_commit(db: Database, key: str) -> str:
    """A write that succeeds, then its transaction's COMMIT fails (a commit hook vetoes it once)."""
    conn = db.connection()
    conn.execute("INSERT INTO t VALUES (?)", (key,))

    def veto() -> bool:
        conn.set_commit_hook(None)
        return True

    conn.set_commit_hook(veto)
    return key


def test_a_commit_that_fails_fails_its_writes_and_the_writer_goes_on(db: Database) -> None:
    """The write ran but its COMMIT did not: the caller gets the error, never the value (a 2xx
    means durable), and the writer thread serves the next write."""
    writer = GroupWriter()
    running, gate = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        assert gate.wait(30)

    async def main() -> tuple[list[object], str]:
        with pytest.raises(apsw.ConstraintError):
            await writer.submit(db, lambda: _vetoed_at_commit(db, "alone"))
        head = writer.submit(db, hold)
        assert await asyncio.to_thread(running.wait, 30)
        grouped = [writer.submit(db, lambda k=k: _insert(db, k)) for k in ("g1", "g2")]
        grouped.append(writer.submit(db, lambda: _vetoed_at_commit(db, "g3")))
        gate.set()
        outcomes = await asyncio.gather(head, *grouped, return_exceptions=True)
        return outcomes, await writer.submit(db, lambda: _insert(db, "after"))

    outcomes, after = asyncio.run(main())
    assert outcomes[0] is None and all(isinstance(o, apsw.ConstraintError) for o in outcomes[1:])
    assert after == "after" and _keys(db) == ["after"]


def test_writes_queued_together_share_a_transaction_and_fail_alone(db: Database) -> None:
    writer = GroupWriter()
    running, gate = threading.Event(), threading.Event()

    def first() -> str:
        running.set()
        assert gate.wait(30)
        return _insert(db, "0")

    async def main() -> list[object]:
        # The first write holds the thread until the rest are queued: they form the next group.
        head = writer.submit(db, first)
        assert await asyncio.to_thread(running.wait, 30)
        rest = [writer.submit(db, lambda i=i: _insert(db, str(i), fail=i == 2)) for i in range(1, 5)]
        gate.set()
        return await asyncio.gather(head, *rest, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[0] == "0" and outcomes[1] == "1" and outcomes[3:] == ["3", "4"]
    assert isinstance(outcomes[2], ValueError)
    assert _keys(db) == ["0", "1", "3", "4"]
    assert (writer.groups, writer.writes) == (2, 5)  # the first alone, the four queued behind it
