-- Claims of a run that ended without a release (its runner was killed, or stopped for a stalled
-- tick): set by the claim, cleared by the release. A runner fails a run claimed a 4th time so
-- (a poison run) instead of claiming it forever.
ALTER TABLE runs ADD COLUMN unreleased_claims INTEGER NOT NULL DEFAULT 0;
