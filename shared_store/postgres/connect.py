"""Connections to the shared PostgreSQL, with the settings every API host and runner needs:

- keepalives and tcp_user_timeout, so a cut link is noticed in seconds, not after the kernel's
  ~15 minutes of retransmissions (a runner must not sit on a dead connection past its lease);
- by default no server-side prepared statements, which a transaction-pooling proxy (PgBouncer) breaks
  (measured: 3 of 60 queries failed with psycopg's default); the store's own pool on a direct
  connection (ABSTRACTGATEWAY_PG_TRANSACTION_POOLER unset) prepares them (DIRECT_SETTINGS);
- autocommit: each statement its own transaction unless the caller opens one (`conn.transaction()`),
  so nothing holds row locks or the change feed between calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

# libpq settings (seconds unless said). tcp_user_timeout: ms unacknowledged data may wait.
CONNECT_SETTINGS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


# A direct connection: statements run 5 times are prepared server-side (psycopg's default; claims
# ~1.9k -> ~3.3k/s measured), and a transaction left open by a cut-off client is ended by the server
# after a minute (it would hold the change feed back: postgres/feed.py). Through a transaction-pooling
# proxy neither holds (a server session is not the client's; PgBouncer refuses startup `options`).
DIRECT_SETTINGS: dict[str, Any] = {
    "prepare_threshold": 5,
    "options": "-c idle_in_transaction_session_timeout=60000",
}


def connect_kwargs(
    application_name: str = "abstractgateway", *, direct: bool = False, **overrides: Any
) -> dict[str, Any]:
    return {
        **CONNECT_SETTINGS,
        "application_name": application_name,
        "autocommit": True,
        "prepare_threshold": None,
        **(DIRECT_SETTINGS if direct else {}),
        **overrides,
    }


def connect(url: str, application_name: str = "abstractgateway", **overrides: Any) -> psycopg.Connection:
    import psycopg

    return psycopg.connect(url, **connect_kwargs(application_name, **overrides))


def make_pool(
    url: str, *, min_size: int = 1, max_size: int = 8, application_name: str = "abstractgateway"
) -> ConnectionPool:
    """A psycopg pool of such connections (opened; close it when done)."""
    from psycopg_pool import ConnectionPool

    kwargs = connect_kwargs(application_name)
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=kwargs,
        open=True,
        # A connection broken by a cut link is found and replaced when taken, not handed out.
        check=ConnectionPool.check_connection,
    )
