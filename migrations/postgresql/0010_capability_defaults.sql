-- 0010_capability_defaults (PostgreSQL twin): which provider / model serves each capability route.
CREATE TABLE capability_defaults (
    route       text PRIMARY KEY,
    provider    text NOT NULL,
    model       text,
    base_url    text,
    options     bytea NOT NULL DEFAULT convert_to('{}', 'UTF8'),
    updated_at  text NOT NULL
);
