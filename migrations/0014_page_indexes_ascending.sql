-- 0014_page_indexes_ascending: the runs list's page indexes lead with created_at ASCENDING, run_id
-- descending, instead of created_at DESC, run_id. The list reads newest first with ties by run_id
-- (ORDER BY created_at DESC, run_id): SQLite walks these backwards for it, entry for entry as before.
-- Written, a start's created_at is the largest yet: in a DESC index it went to the left edge of the
-- b-tree, where SQLite has no append path (each insert shifted the leftmost leaf, which split and
-- rebalanced with its siblings); ascending, it appends at the right edge. Measured: a queued start
-- wrote 15.8 WAL frames (4 KiB pages) with the DESC pair, 11.4 with neither index; each DESC one
-- cost ~2.2 frames a start.
DROP INDEX runs_created_page;
CREATE INDEX runs_created_page ON runs(created_at, run_id DESC);
DROP INDEX runs_status_page;
CREATE INDEX runs_status_page ON runs(status, created_at, run_id DESC);
DROP INDEX runs_output_failed_page;
CREATE INDEX runs_output_failed_page ON runs(created_at, run_id DESC) WHERE output_failed = 1;
