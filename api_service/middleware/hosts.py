"""Host allowlist (ABSTRACTGATEWAY_ALLOWED_HOSTS) against DNS rebinding.

A page on evil.example whose name is re-pointed at 127.0.0.1 reaches this server with `Host:
evil.example` and `Origin: http://evil.example` — same-origin as far as the browser knows. Without
auth (--insecure-local-no-auth) only loopback names are served, whatever the list says; with auth the
list (when set) is enforced too. Entries are host names or globs (`*.example.com`), port ignored.
"""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase

from starlette.types import Scope

from . import header

LOOPBACK_NAMES = ("localhost", "*.localhost")


def host_name(value: str) -> str:
    """The name part of a Host header: `[::1]:8080` -> `::1`, `Example.COM.:80` -> `example.com`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return name.rstrip(".")


def is_loopback(name: str) -> bool:
    if any(fnmatchcase(name, pattern) for pattern in LOOPBACK_NAMES):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    def __init__(self, allowed_hosts: tuple[str, ...], auth_required: bool) -> None:
        self.patterns = tuple(h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip())
        self.loopback_only = not auth_required

    def allowed(self, name: str) -> bool:
        if self.loopback_only and not is_loopback(name):
            return False
        if not self.patterns:
            return True
        return any(p == "*" or fnmatchcase(name, p) for p in self.patterns)

    def refusal(self, scope: Scope) -> str | None:
        """Why the request's Host is not served (its 400's detail), or None when it is."""
        if not self.patterns and not self.loopback_only:
            return None  # with auth and no allowlist every name is served: no parsing per request
        raw = header(scope, b"host")
        name = host_name(raw) if raw else ""
        if self.allowed(name):
            return None
        why = (
            "this server runs without auth and answers loopback names only"
            if self.loopback_only
            else "see ABSTRACTGATEWAY_ALLOWED_HOSTS"
        )
        return f"host {name or '(none)'!r} not served ({why})"
