-- 0012_artifact_blobs (PostgreSQL): artifact bytes in the shared database, content-addressed (blob_id
-- is the sha256 of content), so an API host serves what a runner on another machine stored, and a
-- runner reads what another host received. A blob row is committed in its own statement before the
-- artifact row that names it (a committed artifact row always points at complete bytes).
-- put_at: when the bytes were last put (a put of bytes already here refreshes it). A blob no artifact
-- names is deleted only once put_at is older than a grace window: a store that put the bytes and has
-- not yet committed its artifact row must not lose them (shared_store/blob_store.py).
CREATE TABLE artifact_blobs (
    blob_id     text PRIMARY KEY,
    content     bytea NOT NULL,
    size_bytes  bigint NOT NULL,
    created_at  text NOT NULL,
    put_at      double precision NOT NULL
);
-- EXTERNAL: out of line, never compressed. Media bytes (PNG, MP4, WAV, ...) are compressed already, so
-- pglz would spend CPU on every put to save little, and an uncompressed value lets substr() fetch
-- only the TOAST chunks of the piece asked for: the API streams a download in 1 MiB pieces (first
-- piece of a 64 MiB blob: ~50 ms, where reading it whole took ~4 s on a 2-core test machine).
ALTER TABLE artifact_blobs ALTER COLUMN content SET STORAGE EXTERNAL;
CREATE INDEX artifact_blobs_put ON artifact_blobs(put_at);
