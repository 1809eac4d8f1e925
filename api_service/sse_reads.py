"""The SSE hub's store reads, run in a read thread so none of them runs on the event loop.

A poll is split in two: `read_changes` (here, in a thread) reads what changed for the runs the hub
watched when the poll began and builds their SSE frames; the hub then applies the result on the loop
(broadcasts, advances its tracks), touching no store. The thread sees a track only as a `Watch` (how
far it is), taken while the loop waits for the read: the loop changes tracks only when applying one.

Ordering without "no await between read and subscribe": a run newly watched is `fresh`, and the next
poll reads its row again after its feed read. Whatever committed before that row read is in the row;
whatever committed after it is after the feed position the poll reached, so the following polls see it.
No change can fall into the gap between a stream's own row read and its subscription.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from shared_store.db import Database
from shared_store.feed import ChangeFeed, FeedEntry
from shared_store.reads import ledger_page
from shared_store.run_views import TERMINAL, RunProgress, client_status, ends_with_status_record, run_progress

PAGE = 500
FEED_BATCH = 10_000


def step_frame(seq: int, record: bytes) -> bytes:
    cursor = str(seq).encode()
    return b'id: %s\nevent: step\ndata: {"cursor":%s,"record":%s}\n\n' % (cursor, cursor, record)


@dataclass(frozen=True)
class Watch:
    """A watched run as the hub's track had it when the poll began."""

    run_id: str
    ledger_len: int
    terminal: bool
    final: bool
    fresh: bool  # newly watched: read its row again (see the module's docstring)


@dataclass
class RunRead:
    """What one poll read for one watched run."""

    run_id: str
    from_len: int
    to_len: int
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, SSE frame), dense from from_len+1
    fresh: bool = False  # read for a fresh watch
    overflow: bool = False  # more new records than a subscriber may queue: no frames, every subscriber ends
    changed: bool = False  # the feed named this run (False: only its fresh row was read)
    status: str | None = None  # the client status to show, when read
    terminal: bool = False
    complete: bool = False  # terminal and the ledger ends with the closing status record
    ended_at: str | None = None  # a fresh row's updated_at (a terminal run older than the grace is done)


@dataclass
class PollRead:
    cursor: int
    entries: int  # feed entries read (any run's)
    runs: list[RunRead]


def stream_start(db: Database, run_id: str) -> tuple[RunProgress, bool] | None:
    """A new stream's run row and whether its ledger is complete (terminal, closing record last)."""
    progress = run_progress(db, run_id)
    if progress is None:
        return None
    complete = progress.terminal and ends_with_status_record(db, run_id, progress.ledger_len)
    return progress, complete


def read_changes(
    db: Database,
    feed: ChangeFeed,
    cursor: int | None,
    *,
    watched: Collection[str],
    watch_of: Callable[[str], Watch],
    fresh: list[Watch],
    max_records: int,
) -> PollRead:
    """The feed after `cursor` (None: start at its head) and, per run it names that is `watched`
    (`watch_of` says how far its track is) or that is `fresh`, the new records (at most
    `max_records`, else `overflow`) and its terminal state."""
    latest: dict[str, FeedEntry] = {}
    count = 0
    if cursor is None:
        cursor = feed.head()  # every watched run is fresh then: their rows are read after this
    else:
        while True:
            entries, cursor = feed.poll(cursor, limit=FEED_BATCH)
            count += len(entries)
            for entry in entries:
                if entry.run_id in watched:
                    latest[entry.run_id] = entry  # in feed order: the last one is the newest
            if len(entries) < FEED_BATCH:
                break
    runs = [_read_run(db, watch, latest.pop(watch.run_id, None), max_records) for watch in fresh]
    runs += [_read_run(db, watch_of(run_id), entry, max_records) for run_id, entry in latest.items()]
    return PollRead(cursor, count, runs)


def _read_run(db: Database, watch: Watch, entry: FeedEntry | None, max_records: int) -> RunRead:
    run_id = watch.run_id
    row = run_progress(db, run_id) if watch.fresh else None
    read = RunRead(run_id, watch.ledger_len, watch.ledger_len, fresh=watch.fresh, changed=entry is not None)
    if watch.fresh and row is None and entry is None:
        return read  # deleted meanwhile: nothing to send
    target = max(entry.ledger_len if entry else 0, row.ledger_len if row else 0)
    if target - watch.ledger_len > max_records:
        read.overflow, read.to_len = True, target
    while read.to_len < target:
        page = ledger_page(db, run_id, after=read.to_len, limit=min(PAGE, target - read.to_len))
        if not page.records:
            break
        first = read.to_len + 1
        read.frames += [(first + i, step_frame(first + i, r)) for i, r in enumerate(page.records)]
        read.to_len = page.next_after
    terminal = (row is not None and row.terminal) or (entry is not None and entry.status in TERMINAL)
    if watch.terminal or terminal:
        read.terminal = True
        if not watch.terminal:  # the client status (failed output included) from the row
            row = row or run_progress(db, run_id)
            read.status = row.status if row else (entry.status if entry else None)
        if not watch.final:
            read.complete = ends_with_status_record(db, run_id, read.to_len)
        read.ended_at = row.updated_at if watch.fresh and row else None
    elif entry is not None:
        read.status = client_status(entry.status, False)
    elif row is not None:
        read.status = row.status
    return read
