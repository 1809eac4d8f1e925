"""Sending webhook deliveries: Standard Webhooks signatures, SSRF checks, no redirects, short timeouts,
exponential backoff for a day.

Signature (standardwebhooks.com): `webhook-signature: v1,<base64 HMAC-SHA256(key, f"{id}.{ts}.{body}")>`
where key is the base64 after `whsec_`; one `v1,` entry per active secret (during a rotation both).

SSRF: the target's host is resolved and every address checked — loopback, private, link-local,
shared, reserved, multicast and unspecified addresses are refused unless inside an operator-allowed
network (ABSTRACTGATEWAY_WEBHOOK_ALLOW_NETWORKS) — and the request then goes to the checked address
(Host header and TLS server name stay the host's), so a second DNS answer cannot redirect it.
A refused target is final (status `refused`, nothing sent); a network error or a non-2xx is retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from shared_store import Database
from shared_store.codec import encode
from shared_store.run_views import run_view
from shared_store.webhooks import Claimed, claim_due, get_webhook, keep_body, record_attempt, start_secret

from . import settings as runner_settings

log = structlog.get_logger("runner")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_OUTPUT_BYTES = 65_536  # a larger run output is left out of the body (`output_truncated`)
MAX_BACKOFF_S = 3_600.0


class Refused(Exception):
    """The target may not be called (final)."""


@dataclass(frozen=True)
class WebhookSettings:
    allow_networks: tuple[IpNetwork, ...] = ()
    retry_base_s: float = 5.0  # first retry after this, doubling (jittered) up to MAX_BACKOFF_S
    timeout_s: float = 5.0

    @classmethod
    def from_env(cls) -> WebhookSettings:
        config = runner_settings.current()  # the runner's settings (runner_service/settings.py)
        return cls(config.webhook_allow_networks, config.webhook_retry_base_s, config.webhook_timeout_s)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_target(url: str, allow: tuple[IpNetwork, ...]) -> tuple[httpx.URL, str]:
    """(the URL with its host replaced by a checked address, the original host). Refused when the
    URL is not http(s) or any address of its host is not public nor allowed; OSError when the host
    does not resolve now (retried)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise Refused(f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Refused("only http and https URLs with a host are called")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    infos = socket.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for ip in addresses:
        if not _public(ip) and not any(ip in net for net in allow if net.version == ip.version):
            raise Refused(
                f"{parsed.host} resolves to {ip}, a non-public address (not allowed by the operator)"
            )
    if not addresses:
        raise OSError(f"{parsed.host} has no address")
    return parsed.copy_with(host=str(addresses[0])), parsed.host


class WebhookSender:
    """The runner's delivery job: `step()` sends the due deliveries (returns how many it tried)."""

    def __init__(self, db: Database, settings: WebhookSettings, *, batch: int = 10) -> None:
        self.db = db
        self.settings = settings
        self.batch = batch
        timeout = httpx.Timeout(settings.timeout_s, connect=min(3.0, settings.timeout_s))
        # No redirects (a 3xx is a failed attempt), no proxies or .netrc from the environment.
        self.client = httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def step(self) -> int:
        claim_s = self.batch * (self.settings.timeout_s + 1) + 30
        claimed = claim_due(self.db, n=self.batch, claim_s=claim_s)
        for delivery in claimed:
            self._send(delivery)
        return len(claimed)

    def _body(self, delivery: Claimed) -> bytes:
        view = run_view(self.db, delivery.run_id) or {"run_id": delivery.run_id}
        if len(encode(view.get("output"))) > MAX_OUTPUT_BYTES:
            view = {**view, "output": None, "output_truncated": True}
        return encode({"type": delivery.event, "timestamp": delivery.created_at, "data": view})

    def _secrets(self, delivery: Claimed) -> list[str] | None:
        if delivery.webhook_id is None:
            return [start_secret(self.db)]
        hook = get_webhook(self.db, delivery.webhook_id)
        return None if hook is None else hook.signing_secrets(time.time())

    def _send(self, delivery: Claimed) -> None:
        secrets = self._secrets(delivery)
        if not secrets:
            self._record(delivery, "cancelled", error="the subscription was deleted")
            return
        body = delivery.body or keep_body(self.db, delivery.delivery_id, self._body(delivery))
        try:
            target, host = resolve_target(delivery.url, self.settings.allow_networks)
        except Refused as exc:
            log.warning("webhook_refused", delivery_id=delivery.delivery_id, url=delivery.url, error=str(exc))
            self._record(delivery, "refused", error=str(exc))
            return
        except OSError as exc:  # DNS now: may resolve later
            self._retry(delivery, None, f"cannot resolve: {exc}")
            return
        timestamp = int(time.time())
        headers = {
            "host": host if target.port is None else f"{host}:{target.port}",
            "content-type": "application/json",
            "user-agent": "abstractgateway-webhooks",
            "webhook-id": delivery.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(s, delivery.delivery_id, timestamp, body) for s in secrets),
        }
        extensions: dict[str, Any] = {"sni_hostname": host} if target.scheme == "https" else {}
        try:
            response = self.client.post(target, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            self._retry(delivery, None, f"{type(exc).__name__}: {exc}")
            return
        if 200 <= response.status_code < 300:
            self._record(delivery, "delivered", code=response.status_code)
            log.info("webhook_delivered", delivery_id=delivery.delivery_id, kind=delivery.event)
        else:
            self._retry(delivery, response.status_code, f"answered {response.status_code}")

    def _retry(self, delivery: Claimed, code: int | None, error: str) -> None:
        backoff = min(MAX_BACKOFF_S, self.settings.retry_base_s * 2 ** (delivery.attempts - 1))
        next_at = time.time() + backoff * random.uniform(0.8, 1.2)
        final = next_at > delivery.retry_until
        self._record(delivery, "failed" if final else "pending", code=code, error=error, next_at=next_at)
        log.warning("webhook_failed", delivery_id=delivery.delivery_id, error=error, final=final)

    def _record(
        self,
        delivery: Claimed,
        status: str,
        *,
        code: int | None = None,
        error: str | None = None,
        next_at: float = 0.0,
    ) -> None:
        record_attempt(
            self.db,
            delivery.delivery_id,
            status=status,
            next_attempt_at=next_at or time.time(),
            code=code,
            error=error,
        )
