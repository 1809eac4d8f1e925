-- 0006_api_tokens (PostgreSQL twin): revocable short-lived tokens (the token itself is never stored).
CREATE TABLE api_tokens (
    token_id     text PRIMARY KEY,
    scopes       text NOT NULL,
    run_id       text,
    session_id   text,
    label        text,
    issued_by    text,
    issued_at    text NOT NULL,
    expires_at   double precision NOT NULL,
    revoked_at   text
);
CREATE INDEX api_tokens_expiry ON api_tokens(expires_at);
