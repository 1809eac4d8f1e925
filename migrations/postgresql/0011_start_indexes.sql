-- 0011_start_indexes (PostgreSQL twin): runs_created is a prefix of runs_created_page; drop the spare.
DROP INDEX runs_created;
