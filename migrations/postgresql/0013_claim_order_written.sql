-- 0013_claim_order_written (PostgreSQL): the twin of migrations/0013_claim_order_written.sql, where
-- SQLite drops its AFTER INSERT claim-order trigger because every insert now writes claim_order. Here
-- one BEFORE trigger (runs_claim_order, 0007) sets NEW.claim_order on insert and update alike, in the
-- row being written, at no such cost: it stays, and this migration only records why.
COMMENT ON TRIGGER runs_claim_order ON runs IS
    'claim_order: a queued run''s fair tag (else its due time), any other run''s due time; on insert and update';
