-- 0014_page_indexes_ascending (PostgreSQL): the twin of migrations/0014_page_indexes_ascending.sql,
-- where SQLite rebuilds its runs-list page indexes ascending because its b-tree inserts at the left
-- edge of a DESC index without an append path (~2.2 more WAL pages a start for each). PostgreSQL's
-- indexes keep their 0009 definitions (not measured here to cost the same); this records why.
COMMENT ON INDEX runs_created_page IS 'runs list pages: newest first, ties by run_id (SQLite: ascending since 0014)';
