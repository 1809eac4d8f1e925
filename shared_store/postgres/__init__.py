"""PostgreSQL as the shared store (issue 14's groundwork): the migrator, the SQLite -> PostgreSQL copy,
and the statements that must differ from SQLite's under READ COMMITTED (claims, the fence, the feed).

Imports psycopg (the `postgres` extra) only in the modules that talk to a server: importing this
package costs nothing to a deployment on SQLite."""
