"""PostgreSQL statements whose SQLite form (shared_store/queries.py, same names) is wrong under READ
COMMITTED with many writers. SQLite serialises writers (BEGIN IMMEDIATE); PostgreSQL does not:

- a claim's `UPDATE ... WHERE run_id IN (SELECT ... LIMIT n)` re-claims rows another claimer just
  leased (its subquery reads a snapshot; measured: 4 claimers on 6,000 runs made 14,728 claims). Here
  the candidates are locked with FOR UPDATE SKIP LOCKED in a CTE, which re-checks each locked row's
  WHERE on its newest version and steps over rows another claimer holds (as River, procrastinate, pgmq
  and Oban do);
- a fenced `INSERT ... SELECT ... WHERE owner AND epoch` reads a snapshot and does not wait for a
  takeover in progress: a stale holder's write went in after the takeover committed. Here the fence
  is an UPDATE of the run row (which waits for the row lock, then re-checks owner and epoch on the
  newest version) that also hands out the next dense seq, and the INSERT takes its row from it;
- `MAX(feed_seq) + 1` hands out duplicates and a sequence is not commit order: the feed cursor is
  (feed_xid, feed_seq), read only below the oldest transaction still running.

Times come from the database clock (gw_epoch(), migrations/postgresql/0001): lease and due times of
runners on different hosts compare on one clock. Parameters are psycopg's %(name)s."""

from __future__ import annotations

# --- leases ---------------------------------------------------------------------------------------
# A runner claims only runs whose required labels (a sorted JSON list) are all among its own.
LABELS_MET = "(requires IS NULL OR requires::jsonb <@ %(labels)s::jsonb)"
_CLAIM = (
    "WITH c AS (SELECT run_id FROM runs WHERE lease_owner IS NULL AND due_at IS NOT NULL AND hold = 0 "
    "AND due_at <= gw_epoch() AND {labels} ORDER BY priority DESC, claim_order LIMIT %(n)s "
    "FOR UPDATE SKIP LOCKED) "
    "UPDATE runs SET lease_owner = %(owner)s, lease_expires_at = gw_epoch() + %(lease_s)s, "
    "lease_epoch = runs.lease_epoch + 1 FROM c WHERE runs.run_id = c.run_id "
    "RETURNING runs.run_id, runs.lease_epoch, runs.priority, runs.claim_order, runs.stalled_claims"
)
CLAIM_RUNS = _CLAIM.format(labels=LABELS_MET)
CLAIM_RUNS_UNLABELLED = _CLAIM.format(labels="requires IS NULL")
# Slot given back with the lease (as queries._SLOT_AFTER_RELEASE).
_SLOT_AFTER_RELEASE = (
    "CASE WHEN runs.slot = 1 AND (runs.status IN ('completed', 'failed', 'cancelled') OR "
    "(runs.status = 'waiting' AND NOT EXISTS (SELECT 1 FROM flow_keys WHERE key = runs.concurrency_key "
    "AND count_waiting = 1))) THEN 0 ELSE runs.slot END"
)
# Expired leases back into the claimable set. SKIP LOCKED: a row locked by its (cut-off) holder's
# open transaction is left for a later pass instead of blocking every runner behind it; the re-check
# on the locked row's newest version leaves alone a lease renewed meanwhile.
RECLAIM_EXPIRED = (
    "WITH x AS (SELECT run_id FROM runs WHERE lease_owner IS NOT NULL AND lease_expires_at < gw_epoch() "
    "ORDER BY lease_expires_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
    f"UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, slot = {_SLOT_AFTER_RELEASE} "
    "FROM x WHERE runs.run_id = x.run_id RETURNING runs.run_id, runs.lease_epoch"
)
RENEW_LEASE = (
    "UPDATE runs SET lease_expires_at = gw_epoch() + %(lease_s)s WHERE run_id = %(run_id)s "
    "AND lease_owner = %(owner)s AND lease_epoch = %(epoch)s RETURNING lease_expires_at"
)
LEASE_OF = "SELECT lease_owner, lease_epoch, lease_expires_at FROM runs WHERE run_id = %s"

# --- ledger ---------------------------------------------------------------------------------------
# Every statement that moves a run in the change feed (an append, a state save) sets both columns.
FEED_MOVE = "feed_seq = nextval('runs_feed_seq'), feed_xid = pg_current_xact_id()"
# The fence first: the UPDATE locks the run row (waiting for a takeover in progress, then re-checking
# owner and epoch on what it committed), moves the feed and hands out the dense seq; the INSERT
# writes nothing when the fence matched no row. The ledger_appended trigger then finds the run
# already up to date and writes no second row version.
_FENCE = (
    f"UPDATE runs SET ledger_len = ledger_len + 1, {FEED_MOVE}, stalled_claims = 0 "
    "WHERE run_id = %(run_id)s AND {guard} "
    "RETURNING run_id, ledger_len"
)
_APPEND_LEDGER = (
    "WITH f AS ({fence}) INSERT INTO ledger (run_id, seq, step_status, idempotency_key, record) "
    "SELECT run_id, ledger_len, %(step_status)s, %(idempotency_key)s, %(record)s FROM f RETURNING seq"
)
APPEND_LEDGER_FENCED = _APPEND_LEDGER.format(
    fence=_FENCE.format(guard="lease_owner = %(owner)s AND lease_epoch = %(epoch)s")
)
APPEND_LEDGER_UNLEASED = _APPEND_LEDGER.format(fence=_FENCE.format(guard="lease_owner IS NULL"))
# The run row's lock for a fenced write that is not an append (a state save, a schedule advance, an
# artifact, a command outcome): take it first, then write in the same transaction.
LOCK_HELD_RUN = (
    "SELECT ledger_len FROM runs WHERE run_id = %(run_id)s AND lease_owner = %(owner)s "
    "AND lease_epoch = %(epoch)s FOR NO KEY UPDATE"
)

# --- change feed ----------------------------------------------------------------------------------
# In commit order: a row is read only once every transaction that could still write one before it
# (xid below the snapshot's xmin) has ended, so a late commit is never skipped by the cursor.
# The last column says whether the query's snapshot had no transaction running (xmin = xmax): then
# nothing committed is held back, and a poller may wait for the next commit's wake-up.
_SETTLED = "pg_snapshot_xmin(pg_current_snapshot()) = pg_snapshot_xmax(pg_current_snapshot())"
FEED_SINCE = (
    f"SELECT feed_xid::text, feed_seq, run_id, ledger_len, status, {_SETTLED} FROM runs "
    "WHERE (feed_xid, feed_seq) > (%(xid)s::xid8, %(seq)s) "
    "AND feed_xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY feed_xid, feed_seq LIMIT %(n)s"
)
FEED_SETTLED = f"SELECT {_SETTLED}"
# Everything below the oldest running transaction is history: a subscription starting here sees
# only what commits from now on (no scan).
FEED_HEAD = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"

# --- idempotent starts and commands ---------------------------------------------------------------
# A read-then-insert lets two concurrent duplicates both through under READ COMMITTED. The INSERT's
# ON CONFLICT waits for a concurrent insert of the same key to commit and then does nothing; the
# existing row is then read by a NEW statement (this statement's snapshot predates that commit).
INSERT_START_KEY = (
    "INSERT INTO run_start_keys (idempotency_key, run_id, request_sha256, created_at) "
    "VALUES (%(idempotency_key)s, %(run_id)s, %(request_sha256)s, %(created_at)s) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING run_id"
)
START_KEY = "SELECT run_id, request_sha256 FROM run_start_keys WHERE idempotency_key = %s"
INSERT_COMMAND = (
    "INSERT INTO commands (command_id, run_id, type, payload, ts, client_id, request_id) "
    "VALUES (%(command_id)s, %(run_id)s, %(type)s, %(payload)s, %(ts)s, %(client_id)s, %(request_id)s) "
    "ON CONFLICT (command_id) DO NOTHING RETURNING seq"
)
COMMAND_SEQ = "SELECT seq FROM commands WHERE command_id = %s"

# --- schedules ------------------------------------------------------------------------------------
# A firing is fenced by the schedule's parent run (LOCK_HELD_RUN first, in the same transaction) and
# guarded by the firing it advances from (next_fire_at = the fire time read): the same firing run
# twice, by a stale holder or a duplicate, advances nothing and starts no second child.
ADVANCE_SCHEDULE = (
    "UPDATE schedules SET fired_count = fired_count + 1, last_fired_at = %(fire_at)s, "
    "last_child_run_id = %(child_run_id)s, next_fire_at = %(next_fire_at)s, updated_at = %(now)s "
    "WHERE run_id = %(run_id)s AND status = 'active' AND next_fire_at = %(fire_at)s RETURNING fired_count"
)
ENQUEUE_CHILD = (
    "INSERT INTO runs (run_id, workflow_id, status, parent_run_id, session_id, created_at, updated_at, due_at) "
    "VALUES (%(child_run_id)s, %(workflow_id)s, 'queued', %(run_id)s, %(session_id)s, %(now)s, %(now)s, gw_epoch())"
)
