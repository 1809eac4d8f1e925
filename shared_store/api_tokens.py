"""Minted API tokens: the durable record that makes a signed, expiring token revocable.

The token string is never stored (it is signed by the API, see api_service/tokens.py); a row holds its
id, scopes and restriction. A token is honoured only while its row exists, is unrevoked and unexpired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import queries as q
from .codec import utc_now_iso
from .db import Database

# Expired rows are kept this long (listings show recent expiries), then pruned at the next mint.
KEEP_EXPIRED_S = 86_400.0


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    scopes: tuple[str, ...]
    run_id: str | None
    session_id: str | None
    label: str | None
    issued_at: str
    expires_at: float
    revoked_at: str | None


def record_token(
    db: Database,
    *,
    token_id: str,
    scopes: tuple[str, ...],
    expires_at: float,
    run_id: str | None = None,
    session_id: str | None = None,
    label: str | None = None,
    issued_by: str | None = None,
) -> None:
    with db.write() as conn:
        conn.execute(q.PRUNE_API_TOKENS, (time.time() - KEEP_EXPIRED_S,))
        conn.execute(
            q.INSERT_API_TOKEN,
            {
                "token_id": token_id,
                "scopes": " ".join(scopes),
                "run_id": run_id,
                "session_id": session_id,
                "label": label,
                "issued_by": issued_by,
                "issued_at": utc_now_iso(),
                "expires_at": expires_at,
            },
        )


def token_active(db: Database, token_id: str, *, now: float | None = None) -> bool:
    """Whether a minted token may still be used (its row exists, unrevoked and unexpired)."""
    return db.query_one(q.API_TOKEN_ACTIVE, (token_id, time.time() if now is None else now)) is not None


def revoke_token(db: Database, token_id: str) -> bool | None:
    """Revoke a minted token: True if revoked now, False if it already was, None if unknown."""
    with db.write() as conn:
        row = conn.execute(q.API_TOKEN_EXISTS, (token_id,)).fetchone()
        if row is None:
            return None
        conn.execute(q.REVOKE_API_TOKEN, (utc_now_iso(), token_id))
        return conn.changes() > 0


def list_tokens(db: Database, *, limit: int = 500) -> list[TokenRecord]:
    """Unexpired minted tokens, newest first (revoked ones included, with when)."""
    return [
        TokenRecord(tid, tuple(scopes.split()), run_id, session_id, label, issued_at, expires_at, revoked)
        for tid, scopes, run_id, session_id, label, issued_at, expires_at, revoked in db.query(
            q.LIST_API_TOKENS, (time.time(), limit)
        )
    ]
