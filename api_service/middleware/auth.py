"""Bearer tokens on /api/gateway/*, compared in constant time; repeated bad tokens lock a client out.

Only a wrong token counts toward the lockout (a missing one is a client that forgot to log in). A
locked-out client ip gets 429 with Retry-After on every request until the lockout ends.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from . import client_ip, header, protected, send_error

CHALLENGE = [(b"www-authenticate", b'Bearer realm="abstractgateway"')]
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
    """Wrong-token counts per client ip within a window; `after` of them lock it for `lock_s`."""

    def __init__(self, after: int, window_s: float, lock_s: float) -> None:
        self.after = after
        self.window_s = window_s
        self.lock_s = lock_s
        self._clients: dict[str, list[float]] = {}  # ip -> [failures, window start, locked until]

    def retry_after(self, ip: str, now: float) -> float:
        entry = self._clients.get(ip)
        return max(0.0, entry[2] - now) if entry else 0.0

    def failure(self, ip: str, now: float) -> None:
        entry = self._clients.get(ip)
        if entry is None or now - entry[1] > self.window_s:
            if len(self._clients) >= _MAX_TRACKED:
                self._prune(now)
            entry = self._clients[ip] = [0.0, now, entry[2] if entry else 0.0]
        entry[0] += 1
        if entry[0] >= self.after:
            entry[:] = [0.0, now, now + self.lock_s]

    def _prune(self, now: float) -> None:
        for ip, (_, start, until) in list(self._clients.items()):
            if until <= now and now - start > self.window_s:
                del self._clients[ip]


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, tokens: tuple[str, ...], lockout: Lockout, also: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.tokens = tuple(t.encode() for t in tokens)
        self.lockout = lockout
        self.also = also  # exact paths outside /api/gateway guarded the same way (/metrics)

    def valid(self, token: str) -> bool:
        presented = token.encode()
        ok = False
        for known in self.tokens:  # no early exit: every token is compared
            ok |= hmac.compare_digest(presented, known)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = protected(scope) or (scope["type"] == "http" and scope["path"] in self.also)
        if not guarded or not self.tokens:
            await self.app(scope, receive, send)
            return
        ip = client_ip(scope)
        now = time.monotonic()
        wait = self.lockout.retry_after(ip, now)
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
        token = bearer_token(scope)
        if token is None:
            await send_error(
                scope, send, 401, "missing bearer token (Authorization: Bearer <token>)", CHALLENGE
            )
            return
        if not self.valid(token):
            self.lockout.failure(ip, now)
            await send_error(scope, send, 401, "invalid bearer token", CHALLENGE)
            return
        await self.app(scope, receive, send)
