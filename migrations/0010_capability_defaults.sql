-- 0010_capability_defaults: which provider / model serves each capability route (output.text, output.voice,
-- input.voice, output.image, output.music, ...), set by `abstractgateway config set-default` and read by
-- every runner (so runners on other hosts route the same way) and by the API (status, discovery).

CREATE TABLE capability_defaults (
    route       TEXT PRIMARY KEY,          -- canonical route key, e.g. output.text
    provider    TEXT NOT NULL,
    model       TEXT,
    base_url    TEXT,
    options     BLOB NOT NULL DEFAULT X'7B7D',  -- msgspec JSON object of extra parameters ({})
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;
