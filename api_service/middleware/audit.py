"""Optional JSONL audit log of writes to /api/gateway/*: who, what, when; never the token.

One line per POST/PUT/PATCH/DELETE, refused ones included: time, client ip, token fingerprint,
method, path, status, the ids involved (path parameters plus those a handler records in
`request.state.audit`) and the request id (X-Request-ID, as in the log lines the request caused).
With it on (serve's default), a write answered below 400 has its request line at debug: the audit
line records it once, and the log keeps the refusals and failures.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import msgspec
from starlette.types import Scope

from shared_store.codec import utc_now_iso

from . import client_ip, protected
from .auth import bearer_token, token_fingerprint

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("abstractgateway.audit")
_encode = msgspec.json.Encoder().encode
# token -> its fingerprint (a sha256 per write request otherwise); tokens are few in practice.
_fingerprints: dict[str, str] = {}


class AuditLog:
    """The JSONL file, opened once (O_APPEND: each record reaches it as one write(2), whole).

    Created 0600 (it names clients, token fingerprints and what they changed); an existing file with
    wider permissions is narrowed (a device or a pipe is left as it is). Written with os.write of msgspec's bytes: a TextIOWrapper's
    encode and line-buffer flush cost more than the system call itself, on every write request."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # Only a file of its own is narrowed: AUDIT_LOG=/dev/null (or a pipe to a shipper) names a
        # device others share, and fchmod as root once left /dev/null 0600 for every other user.
        if stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.fchmod(self.fd, 0o600)

    def write(self, entry: dict[str, Any]) -> None:
        try:
            if self.fd < 0:
                raise ValueError("the audit log is closed")
            os.write(self.fd, _encode(entry) + b"\n")
        except (OSError, ValueError) as exc:  # full disk, closed: never fail a request already served
            log.warning("audit log write failed: %s", exc)

    def audits(self, scope: Scope) -> bool:
        """A write to /api/gateway/* (refused ones too): recorded."""
        return scope["method"] in WRITES and protected(scope)

    def record(self, scope: Scope, status: int, elapsed_s: float, request_id: str | None = None) -> None:
        token = bearer_token(scope)
        fingerprint = _fingerprints.get(token) if token else None
        if token and fingerprint is None:
            if len(_fingerprints) >= 1024:  # a client cycling tokens must not grow this forever
                _fingerprints.clear()
            fingerprint = _fingerprints[token] = token_fingerprint(token)
        ids: dict[str, Any] = dict(scope.get("path_params") or {})
        ids.update((scope.get("state") or {}).get("audit") or {})
        self.write(
            {
                "ts": utc_now_iso(),
                "client_ip": client_ip(scope),
                "token": fingerprint,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ids": ids,
                "ms": round(elapsed_s * 1000, 2),
                "request_id": request_id,
            }
        )

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
