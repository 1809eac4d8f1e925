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
-- Media bytes (PNG, MP4, WAV, ...) are compressed already: pglz would spend CPU for nothing, and
-- uncompressed out-of-line storage lets substr() read one chunk of a large blob without
-- de-toasting the whole value (the API streams downloads in chunks).
ALTER TABLE artifact_blobs ALTER COLUMN content SET STORAGE EXTERNAL;
CREATE INDEX artifact_blobs_put ON artifact_blobs(put_at);
