"""Who a request is and what it may do: scopes, minted (signed, expiring) tokens, run/session limits.

Scopes: `read` (runs, ledger, SSE, artifacts, discovery), `run` (start, schedule, commands, media, KG),
`admin` (bundle upload / overwrite / delete / deprecate, token minting). Each /api/gateway route
declares the one it needs in the route table (`ApiRoute(needs=...)`); an app with a gateway route that
declares none refuses to build. Tokens from ABSTRACTGATEWAY_AUTH_TOKEN(S) hold every scope.

A minted token is `agw1.<payload>.<signature>`: the payload (base64url JSON: id, scopes, expiry, optional
run or session) is signed with HMAC-SHA256 under a server secret (ABSTRACTGATEWAY_TOKEN_SECRET, else a
0600 file in the data dir). The signature makes it unforgeable; its row in the db (shared_store
api_tokens) makes it revocable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

READ, RUN, ADMIN = "read", "run", "admin"
SCOPES = (READ, RUN, ADMIN)
PREFIX = "agw1."
SECRET_FILE = "token_secret"


@dataclass(frozen=True)
class Principal:
    """The caller: its scopes and, for a restricted minted token, the one run or session it may touch."""

    fingerprint: str | None
    scopes: frozenset[str]
    run_id: str | None = None
    session_id: str | None = None
    token_id: str | None = None

    @property
    def restricted(self) -> bool:
        return self.run_id is not None or self.session_id is not None

    def describe_restriction(self) -> str:
        return f"run '{self.run_id}'" if self.run_id is not None else f"session '{self.session_id}'"


# Configured tokens and no-auth mode: every scope, no restriction.
FULL_ACCESS = Principal(None, frozenset(SCOPES))
# No token (open routes such as /api/health): no scope at all.
ANONYMOUS = Principal(None, frozenset())
PRINCIPAL_KEY = "gateway.principal"


class Claims(msgspec.Struct, forbid_unknown_fields=True):
    jti: str
    scopes: list[str]
    exp: float
    run: str | None = None
    session: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(data_dir: Path, env: dict[str, str] | os._Environ[str] | None = None) -> bytes:
    """The signing secret: ABSTRACTGATEWAY_TOKEN_SECRET, else `data_dir/token_secret` (created 0600
    with 32 random bytes on first use; every API worker on the data dir reads the same one)."""
    env = {} if env is None else env  # the environment's secret arrives as ApiSettings.token_secret
    configured = env.get("ABSTRACTGATEWAY_TOKEN_SECRET", "").strip()
    if configured:
        if len(configured) < 32:
            raise ValueError("ABSTRACTGATEWAY_TOKEN_SECRET must be at least 32 characters")
        return configured.encode()
    path = data_dir / SECRET_FILE
    if not path.exists():
        # Written whole under a temporary name, then linked in: API workers starting together never
        # read a half-written (or empty: forgeable) secret, and the first link wins.
        tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_hex(32).encode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds a token secret under 32 bytes: remove it to have a new one made")
    return secret


def sign(secret: bytes, claims: Claims) -> str:
    payload = _b64(msgspec.json.encode(claims))
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return f"{PREFIX}{payload}.{_b64(mac)}"


def mint(
    secret: bytes,
    scopes: tuple[str, ...],
    ttl_s: float,
    *,
    run_id: str | None = None,
    session_id: str | None = None,
) -> tuple[str, Claims]:
    claims = Claims(secrets.token_hex(8), list(scopes), round(time.time() + ttl_s, 3), run_id, session_id)
    return sign(secret, claims), claims


def verify(secret: bytes, token: str, *, now: float | None = None) -> Claims | None:
    """The claims of a well-signed, unexpired minted token; None for anything else."""
    if not token.startswith(PREFIX):
        return None
    payload, _, mac = token[len(PREFIX) :].partition(".")
    try:
        given = _unb64(mac)
    except (binascii.Error, ValueError):
        return None
    expected = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        return None
    try:
        claims = msgspec.json.decode(_unb64(payload), type=Claims)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    if claims.exp <= (time.time() if now is None else now) or not set(claims.scopes) <= set(SCOPES):
        return None
    return claims


def principal_of(scope: dict[str, Any]) -> Principal:
    """The caller the auth middleware recognised; nobody (no scope) when it did not run."""
    return scope.get(PRINCIPAL_KEY) or ANONYMOUS
