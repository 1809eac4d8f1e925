-- 0013_claim_order_written: every INSERT INTO runs writes claim_order itself (shared_store/queries.py:
-- ENQUEUE_RUN, ENQUEUE_CHILD_RUN, the RunStore upserts, IMPORT_RUN; run_seed's finished runs have no
-- due time, so NULL is their order), and the AFTER INSERT trigger that recomputed it goes.
-- Its WHEN was false for every one of those inserts, yet SQLite runs a trigger's WHEN inside the
-- trigger's sub-program: each insert allocated and cleared that program's frame (an UPDATE of runs,
-- its index upkeep and the nested claim-order trigger). Measured on a start (the API's queued INSERT,
-- 3,000 runs in): 38-48 us with the trigger, 22-25 us without it.
-- runs_claim_order_updated stays: updates of status, due_at and fair_tag come from many statements.
DROP TRIGGER runs_claim_order_inserted;
