"""The API process's settings: declared once (shared_store/settings.py holds the declaration helpers and
the settings both processes read), read once from the environment by `serve` and passed to the app."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_store.flow_control import FlowControlError, parse_media_requires
from shared_store.media_jobs import KG_QUERY, MEDIA_KINDS, PROMPT_CACHE
from shared_store.settings import SettingsError, SharedSettings, items, path, read_values, setting

__all__ = ["DEFAULT_ORIGINS", "ApiSettings", "SettingsError"]

# Local browser UIs are allowed by default; a request with no Origin (curl, SDKs) is not a browser.
DEFAULT_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")


def _proxies(raw: str) -> tuple[str, ...]:
    # A typo here would otherwise surface at the first request (middleware is built lazily).
    proxies = items(raw)
    for proxy in proxies:
        ipaddress.ip_network(proxy, strict=False)
    return proxies


def _media_requires(raw: str) -> dict[str, list[str]]:
    try:
        return parse_media_requires(raw, (*MEDIA_KINDS, KG_QUERY, PROMPT_CACHE))
    except FlowControlError as exc:
        raise ValueError(str(exc)) from None


def _secret(raw: str) -> bytes:
    if len(raw) < 32:
        raise ValueError("must be at least 32 characters")
    return raw.encode()


@dataclass(frozen=True)
class ApiSettings(SharedSettings):
    host: str = setting("HOST", "127.0.0.1", "serve: listen address (behind a reverse proxy keep 127.0.0.1)",
                        section="serve", active=True)  # fmt: skip
    port: int = setting("PORT", 8080, "serve: listen port", section="serve", minimum=0, maximum=65535,
                        active=True)  # fmt: skip
    workers: int = setting("WORKERS", 1, "serve: API processes sharing the port (SO_REUSEPORT)",
                           section="serve", minimum=1, maximum=64)  # fmt: skip
    # Built by from_env from AUTH_TOKEN and AUTH_TOKENS (tests give it directly).
    tokens: tuple[str, ...] = field(default=(), repr=False)
    auth_token: str = setting(
        "AUTH_TOKEN", "", "bearer token clients send (required: serve refuses to start without one)",
        section="serve", secret=True, active=True,
    )  # fmt: skip
    auth_tokens: tuple[str, ...] = setting(
        "AUTH_TOKENS", (), "more accepted bearer tokens, comma separated (rotation)", section="serve",
        secret=True,
    )  # fmt: skip
    allowed_origins: tuple[str, ...] = setting(
        "ALLOWED_ORIGINS", DEFAULT_ORIGINS, "browser origins allowed, comma separated globs (scheme, host, port)",
        section="serve", example="https://ui.example.org",
    )  # fmt: skip
    # The original gateway's cap: its clients size uploads to it.
    max_body_bytes: int = setting("MAX_BODY_BYTES", 10 * 1024 * 1024, "largest request body in bytes (413 above)",
                                  section="serve", minimum=1)  # fmt: skip
    max_concurrency: int = setting("MAX_CONCURRENCY", 256, "in-flight non-streaming requests per API process (429 above)",
                                   section="serve", minimum=1)  # fmt: skip
    # ... of which one client address may hold this many: 300 trickled bodies once held all 256.
    max_client_concurrency: int = setting(
        "MAX_CLIENT_CONCURRENCY", 32, "in-flight requests one client address may hold (429 above)",
        section="serve", minimum=1,
    )  # fmt: skip
    max_streams: int = setting("MAX_STREAMS", 10_000, "open SSE streams per API process (each holds a file descriptor)",
                               section="serve", minimum=1)  # fmt: skip
    max_streams_per_client: int = setting(
        "MAX_STREAMS_PER_CLIENT", 1_000, "SSE streams one client address may hold (429 above)",
        section="serve", minimum=1,
    )  # fmt: skip
    max_streams_per_token: int = setting(
        "MAX_STREAMS_PER_TOKEN", 2_000, "SSE streams one token may hold (429 above)", section="serve",
        minimum=1,
    )  # fmt: skip
    # heartbeat_s below this is raised to it: 2,000 streams at 0.05 s took the API to 100% CPU.
    min_heartbeat_s: float = setting(
        "MIN_HEARTBEAT_S", 5.0, "a stream's heartbeat_s below this is raised to it (seconds)",
        section="serve", above=0,
    )  # fmt: skip
    body_timeout_s: float = setting(
        "BODY_TIMEOUT_S", 30.0, "seconds a request body may take after its headers (408, connection closed)",
        section="serve", above=0,
    )  # fmt: skip
    # Hypercorn's keep-alive timer: it runs until a request's headers are complete, then closes the
    # connection. A slow-headers connection holds a socket, never a request slot (the app has not
    # started); a shorter timer also closes idle keep-alive connections sooner, racing clients that
    # reuse them.
    header_timeout_s: float = setting(
        "HEADER_TIMEOUT_S", 75.0, "seconds request headers may take on a new or idle connection (then closed)",
        section="serve", above=0,
    )  # fmt: skip
    max_batch_records: int = setting(
        "MAX_BATCH_RECORDS", 100_000, "ledger/batch: records in one answer, all runs together",
        section="serve", minimum=1,
    )  # fmt: skip
    max_batch_bytes: int = setting(
        "MAX_BATCH_BYTES", 8 * 1024 * 1024, "ledger/batch: bytes of records in one answer (the rest comes next)",
        section="serve", minimum=1,
    )  # fmt: skip
    allowed_hosts: tuple[str, ...] = setting(
        "ALLOWED_HOSTS", (), "Host names served, comma separated globs (unset: any; without auth loopback only)",
        section="serve", example="gateway.example.com",
    )  # fmt: skip
    trusted_proxies: tuple[str, ...] = setting(
        "TRUSTED_PROXIES", (), "proxy addresses / CIDRs whose X-Forwarded-For names the client",
        section="serve", parse=_proxies, example="127.0.0.1",
    )  # fmt: skip
    token_max_ttl_s: float = setting(
        "TOKEN_MAX_TTL_S", 86_400.0, "longest lifetime of a minted token (POST /api/gateway/tokens), seconds",
        section="serve", above=0,
    )  # fmt: skip
    token_secret: bytes | None = setting(
        "TOKEN_SECRET", None, "HMAC key of minted tokens, >= 32 chars (default: DATA_DIR/token_secret, 0600)",
        section="serve", parse=_secret, secret=True,
    )  # fmt: skip
    lockout_after: int = setting(
        "LOCKOUT_AFTER", 10, "wrong tokens from one client (or with one token) before a lockout",
        section="serve", minimum=1,
    )  # fmt: skip
    lockout_window_s: float = 300.0  # ... within this window ...
    lockout_s: float = setting("LOCKOUT_S", 60.0, "lockout length in seconds (a valid token is never locked out)",
                               section="serve", above=0)  # fmt: skip
    audit_log: Path | None = setting(
        "AUDIT_LOG", None, "JSONL file of every write, never the token (default DATA_DIR/audit.jsonl, 0600)",
        section="serve", parse=path, example="/var/log/abstractgateway/audit.jsonl",
    )  # fmt: skip
    sse_poll_s: float = setting("SSE_POLL_S", 0.01, "change-feed poll interval of the SSE hub (seconds)",
                                section="serve", above=0)  # fmt: skip
    sse_buffer: int = setting(
        "SSE_BUFFER", 1_000, "frames an SSE client may lag before it is closed (it resumes with Last-Event-ID)",
        section="serve", minimum=1,
    )  # fmt: skip
    sse_retry_ms: int = 2_000
    # A terminal run whose closing status record has not appeared after this long is reported done.
    done_grace_s: float = 1.0
    # The longest a media / KG request holds its connection waiting for the job (its ?wait_s= is capped).
    max_wait_s: float = setting(
        "MAX_WAIT_S", 300.0, "longest a media / KG request waits for its job before answering 202 (seconds)",
        section="serve", above=0,
    )  # fmt: skip
    media_requires: Mapping[str, list[str]] = setting(
        "MEDIA_REQUIRES", {},
        'runner labels each media kind\'s jobs require, JSON ({"image_generate": ["gpu"]})',
        section="serve", parse=_media_requires,
    )  # fmt: skip
    # /metrics needs the bearer token like /api/gateway unless the operator opens it (a scraper on a
    # private network without the token).
    metrics_public: bool = setting("METRICS_PUBLIC", False, "serve /metrics without a token (1 / 0)",
                                   section="serve")  # fmt: skip

    @property
    def auth_required(self) -> bool:
        return bool(self.tokens)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ApiSettings:
        """Settings from ABSTRACTGATEWAY_* variables; `overrides` win (tests, CLI flags)."""
        values = read_values(cls, env)
        given = (values.get("auth_token", ""), *values.get("auth_tokens", ()))
        values["tokens"] = tuple(dict.fromkeys(t for t in given if t))
        return cls(**{**values, **overrides})
