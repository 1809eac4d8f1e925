"""Bearer tokens on /api/gateway/*, compared in constant time; repeated bad tokens lock a client out.

A valid token is always served: the lockout only refuses *invalid* tokens, so a client behind a proxy
that shares its address with a misbehaving one is never locked out by it. Wrong tokens are counted per
client address and per token fingerprint (a stale token hammered from many addresses locks too).
Only a wrong token counts (a missing one is a client that forgot to log in).

Minted tokens (api_service.access) are checked for signature and expiry here and for revocation in the
db (a primary-key read, off the event loop). The caller is left in the ASGI scope as a `Principal`;
the route checks the scope it needs. /api/health takes an optional token: a valid one unlocks detail.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from shared_store.api_tokens import token_active
from shared_store.db import Database
from shared_store.errors import StoreError

from ..access import ANONYMOUS, FULL_ACCESS, PREFIX, PRINCIPAL_KEY, Principal, verify
from ..read_pool import pool as read_pool
from . import client_ip, header, protected, send_error

CHALLENGE = [(b"www-authenticate", b'Bearer realm="abstractgateway"')]
HEALTH = "/api/health"
_MAX_TRACKED = 10_000


def token_fingerprint(token: str) -> str:
    """What logs may show of a token: a short hash, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def bearer_token(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Lockout:
    """Wrong-token counts per key (client address, token fingerprint) within a window; `after` of
    them lock that key for `lock_s`."""

    def __init__(self, after: int, window_s: float, lock_s: float) -> None:
        self.after = after
        self.window_s = window_s
        self.lock_s = lock_s
        self._keys: dict[str, list[float]] = {}  # key -> [failures, window start, locked until]

    def retry_after(self, keys: tuple[str, ...], now: float) -> float:
        return max((max(0.0, e[2] - now) for k in keys if (e := self._keys.get(k))), default=0.0)

    def failure(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            entry = self._keys.get(key)
            if entry is None or now - entry[1] > self.window_s:
                if len(self._keys) >= _MAX_TRACKED:
                    self._prune(now)
                entry = self._keys[key] = [0.0, now, entry[2] if entry else 0.0]
            entry[0] += 1
            if entry[0] >= self.after:
                entry[:] = [0.0, now, now + self.lock_s]

    def _prune(self, now: float) -> None:
        for key, (_, start, until) in list(self._keys.items()):
            if until <= now and now - start > self.window_s:
                del self._keys[key]


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        tokens: tuple[str, ...],
        lockout: Lockout,
        secret: bytes | None = None,
        db: Database | None = None,
        also: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.also = also  # exact paths outside /api/gateway guarded the same way (/metrics)
        self.tokens = tuple(t.encode() for t in tokens)
        self.lockout = lockout
        self.secret = secret
        self.db = db

    def configured(self, token: str) -> bool:
        presented = token.encode()
        ok = False
        for known in self.tokens:  # no early exit: every token is compared
            ok |= hmac.compare_digest(presented, known)
        return ok

    async def principal(self, token: str) -> Principal | None:
        """The caller a token stands for, or None when it is not (or no longer) valid."""
        if self.configured(token):
            return FULL_ACCESS
        if self.secret is None or self.db is None or not token.startswith(PREFIX):
            return None
        claims = verify(self.secret, token)
        if claims is None:
            return None
        try:
            active = await read_pool.submit(functools.partial(token_active, self.db, claims.jti))
        except StoreError:
            return None
        if not active:
            return None
        return Principal(
            token_fingerprint(token), frozenset(claims.scopes), claims.run, claims.session, claims.jti
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.tokens:  # --insecure-local-no-auth (loopback hosts only)
            scope[PRINCIPAL_KEY] = FULL_ACCESS
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == HEALTH:
            await self._health(scope, receive, send)
            return
        if not (protected(scope) or (scope["type"] == "http" and scope["path"] in self.also)):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None:
            await send_error(
                scope, send, 401, "missing bearer token (Authorization: Bearer <token>)", CHALLENGE
            )
            return
        principal = await self.principal(token)
        if principal is not None:
            scope[PRINCIPAL_KEY] = principal
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        keys = (f"ip:{client_ip(scope)}", f"fp:{token_fingerprint(token)}")
        wait = self.lockout.retry_after(keys, now)
        if wait > 0:
            retry = str(math.ceil(wait)).encode()
            await send_error(
                scope,
                send,
                429,
                "too many invalid tokens from this client; retry later",
                [(b"retry-after", retry)],
            )
            return
        self.lockout.failure(keys, now)
        await send_error(scope, send, 401, "invalid bearer token", CHALLENGE)

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Health is open; a valid token (counted like any other when wrong) unlocks the detail."""
        scope[PRINCIPAL_KEY] = ANONYMOUS
        token = bearer_token(scope)
        if token is not None:
            principal = await self.principal(token)
            if principal is not None:
                scope[PRINCIPAL_KEY] = principal
            else:
                keys = (f"ip:{client_ip(scope)}", f"fp:{token_fingerprint(token)}")
                self.lockout.failure(keys, time.monotonic())
        await self.app(scope, receive, send)
