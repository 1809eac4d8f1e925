-- 0012_artifact_blobs: the twin of migrations/postgresql/0012_artifact_blobs.sql, where artifact bytes
-- live in the shared database. UNUSED in SQLite mode: a SQLite gateway keeps its artifact bytes as
-- files under the data dir's artifacts/ (shared_store/blob_store.py FileBlobs), exactly as before.
-- The table exists so both dialects have the same schema and numbered migrations.
CREATE TABLE artifact_blobs (
    blob_id     TEXT PRIMARY KEY,
    content     BLOB NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    put_at      REAL NOT NULL
);
CREATE INDEX artifact_blobs_put ON artifact_blobs(put_at);
