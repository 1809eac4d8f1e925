"""The API process's settings, read once from the environment (ABSTRACTGATEWAY_*)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared_store import limits
from shared_store.flow_control import FlowControlError, parse_media_requires
from shared_store.media_jobs import KG_QUERY, MEDIA_KINDS, PROMPT_CACHE

# Local browser UIs are allowed by default; a request with no Origin (curl, SDKs) is not a browser.
DEFAULT_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")


class SettingsError(ValueError):
    """An ABSTRACTGATEWAY_* variable has a value the API cannot use."""


@dataclass(frozen=True)
class ApiSettings:
    tokens: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = DEFAULT_ORIGINS
    max_body_bytes: int = 10 * 1024 * 1024  # the original gateway's cap: its clients size uploads to it
    max_concurrency: int = 256  # in-flight non-streaming /api/gateway requests
    # ... of which one client address may hold this many: 300 trickled bodies once held all 256.
    max_client_concurrency: int = 32
    max_streams: int = 10_000  # open SSE streams
    max_streams_per_client: int = 1_000  # ... from one client address
    max_streams_per_token: int = 2_000  # ... with one token
    # heartbeat_s below this is raised to it: 2,000 streams at 0.05 s took the API to 100% CPU.
    min_heartbeat_s: float = 5.0
    # A request's body must arrive within this long of its headers (slow: 408, connection closed).
    body_timeout_s: float = 30.0
    # Headers must arrive within this long of the connection opening or going idle (Hypercorn's
    # keep-alive timer: it runs until a request's headers are complete, then closes the connection).
    # A slow-headers connection holds a socket, never a request slot (the app has not started); a
    # shorter timer also closes idle keep-alive connections sooner, racing clients that reuse them.
    header_timeout_s: float = 75.0
    max_input_bytes: int = limits.DEFAULT_MAX_INPUT_BYTES  # a run's input_data, JSON-encoded (413)
    max_batch_records: int = 100_000  # ledger/batch: records in one answer, all runs together ...
    max_batch_bytes: int = 8 * 1024 * 1024  # ... and their bytes (later runs get their next page next time)
    allowed_hosts: tuple[str, ...] = ()  # Host names served (globs); empty: any (loopback only without auth)
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For names the client
    token_max_ttl_s: float = 86_400.0  # the longest a minted token may live
    token_secret: bytes | None = None  # minted tokens' HMAC key (None: read/created in the data dir)
    lockout_after: int = 10  # wrong tokens from one client ip ...
    lockout_window_s: float = 300.0  # ... within this window ...
    lockout_s: float = 60.0  # ... lock it out this long
    audit_log: Path | None = None
    heartbeat_s: float = 15.0
    sse_poll_s: float = 0.01
    sse_buffer: int = 1_000  # frames a subscriber may lag before it is closed
    sse_retry_ms: int = 2_000
    # A terminal run whose closing status record has not appeared after this long is reported done.
    done_grace_s: float = 1.0
    # The longest a media / KG request holds its connection waiting for the job (its ?wait_s= is capped).
    max_wait_s: float = 300.0
    artifacts_dir: Path | None = None
    flows_dir: Path | None = None
    # Media kind -> runner labels its jobs require (ABSTRACTGATEWAY_MEDIA_REQUIRES, a JSON object).
    media_requires: Mapping[str, list[str]] = field(default_factory=dict)
    # /metrics needs the bearer token like /api/gateway unless the operator opens it (a scraper
    # on a private network without the token).
    metrics_public: bool = False

    @property
    def auth_required(self) -> bool:
        return bool(self.tokens)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ApiSettings:
        """Settings from ABSTRACTGATEWAY_* variables; `overrides` win (tests, CLI flags)."""
        env = os.environ if env is None else env
        tokens = [t.strip() for t in env.get("ABSTRACTGATEWAY_AUTH_TOKENS", "").split(",") if t.strip()]
        single = env.get("ABSTRACTGATEWAY_AUTH_TOKEN", "").strip()
        if single:
            tokens.insert(0, single)
        origins = env.get("ABSTRACTGATEWAY_ALLOWED_ORIGINS")
        values: dict[str, object] = {
            "tokens": tuple(dict.fromkeys(tokens)),
            "allowed_origins": (
                tuple(o.strip() for o in origins.split(",") if o.strip()) if origins else DEFAULT_ORIGINS
            ),
            "max_body_bytes": _int(env, "ABSTRACTGATEWAY_MAX_BODY_BYTES", cls.max_body_bytes),
            "max_concurrency": _int(env, "ABSTRACTGATEWAY_MAX_CONCURRENCY", cls.max_concurrency),
            "max_client_concurrency": _int(
                env, "ABSTRACTGATEWAY_MAX_CLIENT_CONCURRENCY", cls.max_client_concurrency
            ),
            "max_streams": _int(env, "ABSTRACTGATEWAY_MAX_STREAMS", cls.max_streams),
            "max_streams_per_client": _int(
                env, "ABSTRACTGATEWAY_MAX_STREAMS_PER_CLIENT", cls.max_streams_per_client
            ),
            "max_streams_per_token": _int(
                env, "ABSTRACTGATEWAY_MAX_STREAMS_PER_TOKEN", cls.max_streams_per_token
            ),
            "min_heartbeat_s": _float(env, "ABSTRACTGATEWAY_MIN_HEARTBEAT_S", cls.min_heartbeat_s),
            "body_timeout_s": _float(env, "ABSTRACTGATEWAY_BODY_TIMEOUT_S", cls.body_timeout_s),
            "header_timeout_s": _float(env, "ABSTRACTGATEWAY_HEADER_TIMEOUT_S", cls.header_timeout_s),
            "max_input_bytes": _limit(limits.max_input_bytes, env),
            "max_batch_records": _int(env, "ABSTRACTGATEWAY_MAX_BATCH_RECORDS", cls.max_batch_records),
            "max_batch_bytes": _int(env, "ABSTRACTGATEWAY_MAX_BATCH_BYTES", cls.max_batch_bytes),
            "allowed_hosts": _list(env, "ABSTRACTGATEWAY_ALLOWED_HOSTS"),
            "trusted_proxies": _list(env, "ABSTRACTGATEWAY_TRUSTED_PROXIES"),
            "token_max_ttl_s": _float(env, "ABSTRACTGATEWAY_TOKEN_MAX_TTL_S", cls.token_max_ttl_s),
            "lockout_after": _int(env, "ABSTRACTGATEWAY_LOCKOUT_AFTER", cls.lockout_after),
            "lockout_s": _float(env, "ABSTRACTGATEWAY_LOCKOUT_S", cls.lockout_s),
            "audit_log": _path(env, "ABSTRACTGATEWAY_AUDIT_LOG"),
            "sse_poll_s": _float(env, "ABSTRACTGATEWAY_SSE_POLL_S", cls.sse_poll_s),
            "sse_buffer": _int(env, "ABSTRACTGATEWAY_SSE_BUFFER", cls.sse_buffer),
            "max_wait_s": _float(env, "ABSTRACTGATEWAY_MAX_WAIT_S", cls.max_wait_s),
            "flows_dir": _path(env, "ABSTRACTGATEWAY_FLOWS_DIR"),
            "media_requires": _media_requires(env),
            "metrics_public": _flag(env, "ABSTRACTGATEWAY_METRICS_PUBLIC"),
        }
        values.update(overrides)
        try:  # a typo here would otherwise surface at the first request (middleware is built lazily)
            for proxy in values["trusted_proxies"]:  # type: ignore[union-attr]
                ipaddress.ip_network(str(proxy).strip(), strict=False)
        except ValueError as exc:
            raise SettingsError(f"ABSTRACTGATEWAY_TRUSTED_PROXIES: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise SettingsError(f"{name} must be >= 1, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be > 0, not {value}")
    return value


def _limit(read: Callable[[Mapping[str, str]], int], env: Mapping[str, str]) -> int:
    try:
        return read(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in env.get(name, "").split(",") if v.strip())


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def _media_requires(env: Mapping[str, str]) -> dict[str, list[str]]:
    try:
        return parse_media_requires(
            env.get("ABSTRACTGATEWAY_MEDIA_REQUIRES"), (*MEDIA_KINDS, KG_QUERY, PROMPT_CACHE)
        )
    except FlowControlError as exc:
        raise SettingsError(f"ABSTRACTGATEWAY_MEDIA_REQUIRES {exc}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1 or 0 (true / false), not {raw!r}")
