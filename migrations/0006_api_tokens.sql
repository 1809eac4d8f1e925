-- 0006_api_tokens: short-lived tokens an admin mints (scoped, optionally to one run or session).
-- The token itself is signed (HMAC) and never stored; this table is what makes one revocable: a token
-- whose row is missing or revoked is refused, whatever its signature says.
CREATE TABLE api_tokens (
    token_id     TEXT PRIMARY KEY,
    scopes       TEXT NOT NULL,          -- space-separated: read run admin
    run_id       TEXT,                   -- restricted to this run, or
    session_id   TEXT,                   -- to the runs of this session
    label        TEXT,
    issued_by    TEXT,                   -- the minting token's fingerprint (never the token)
    issued_at    TEXT NOT NULL,
    expires_at   REAL NOT NULL,          -- unix seconds
    revoked_at   TEXT
);
CREATE INDEX api_tokens_expiry ON api_tokens(expires_at);
