"""Webhook subscriptions and their deliveries (API and runner side; no network here).

Deliveries are rows the `run_webhooks` trigger writes in the statement that ends a run or makes it
wait for a user (migration `operations`). A runner claims due ones (`claim_due`), sends them
(runner_service/webhooks.py) and records the outcome (`record_attempt`); retries back off
exponentially until a day after the event; a delivery can be sent again by hand (`redeliver`).
Secrets follow Standard Webhooks: `whsec_` + base64 of 24 random bytes.
"""

from __future__ import annotations

import base64
import secrets as random
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .codec import decode, encode, utc_now_iso
from .db import Database
from .errors import Conflict

EVENTS = ("run.completed", "run.failed", "run.cancelled", "run.waiting")
ROTATION_OVERLAP_S = 86_400.0  # a rotated-out secret keeps signing this long
RETRY_WINDOW_S = 86_400.0

INSERT_WEBHOOK = (
    "INSERT INTO webhooks (webhook_id, url, events, workflow_id, tag, secrets, created_at) "
    "VALUES (:webhook_id, :url, :events, :workflow_id, :tag, :secrets, :created_at)"
)
_HOOK_COLUMNS = "webhook_id, url, events, workflow_id, tag, secrets, created_at"
WEBHOOK_OF = f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE webhook_id = ? AND deleted_at IS NULL"
WEBHOOKS = f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at, webhook_id"
DELETE_WEBHOOK = "UPDATE webhooks SET deleted_at = :now WHERE webhook_id = :webhook_id AND deleted_at IS NULL"
CANCEL_PENDING = (
    "UPDATE webhook_deliveries SET status = 'cancelled', updated_at = :now "
    "WHERE webhook_id = :webhook_id AND status = 'pending'"
)
SET_SECRETS = "UPDATE webhooks SET secrets = :secrets WHERE webhook_id = :webhook_id AND deleted_at IS NULL"
START_KEY = "SELECT secret FROM webhook_keys WHERE name = 'start'"
INSERT_START_KEY = "INSERT INTO webhook_keys (name, secret, created_at) VALUES ('start', :secret, :now) ON CONFLICT DO NOTHING"
_DELIVERY_COLUMNS = (
    "delivery_id, webhook_id, run_id, event, url, status, attempts, next_attempt_at, retry_until, "
    "last_status_code, last_error, created_at, updated_at"
)
DELIVERIES_OF = (
    f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries INDEXED BY webhook_deliveries_hook "
    "WHERE webhook_id = :webhook_id ORDER BY created_at DESC, delivery_id LIMIT :limit"
)
DELIVERY_OF = f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = ?"
# Claim: due, pending, not being sent by another runner (or that runner's claim ran out).
CLAIM_DUE = (
    "UPDATE webhook_deliveries SET claimed_until = :until, attempts = attempts + 1, updated_at = :iso "
    "WHERE delivery_id IN (SELECT delivery_id FROM webhook_deliveries INDEXED BY webhook_deliveries_due "
    "WHERE status = 'pending' AND next_attempt_at <= :now AND (claimed_until IS NULL OR claimed_until < :now) "
    "ORDER BY next_attempt_at LIMIT :n) "
    "RETURNING delivery_id, webhook_id, run_id, event, url, body, attempts, retry_until, created_at"
)
DUE_PROBE = (
    "SELECT 1 FROM webhook_deliveries INDEXED BY webhook_deliveries_due WHERE status = 'pending' "
    "AND next_attempt_at <= ? LIMIT 1"
)
SET_BODY = "UPDATE webhook_deliveries SET body = :body WHERE delivery_id = :delivery_id AND body IS NULL"
BODY_OF = "SELECT body FROM webhook_deliveries WHERE delivery_id = ?"
RECORD_ATTEMPT = (
    "UPDATE webhook_deliveries SET status = :status, next_attempt_at = :next_attempt_at, claimed_until = NULL, "
    "last_status_code = :code, last_error = :error, updated_at = :iso WHERE delivery_id = :delivery_id"
)
REDELIVER = (
    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = :now, retry_until = :until, "
    "claimed_until = NULL, updated_at = :iso WHERE delivery_id = :delivery_id AND webhook_id = :webhook_id "
    "AND status != 'pending'"
)


def check_url(url: str) -> str:
    """An http(s) URL with a host (where it points is checked by the runner, at each send)."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    if parsed.username or parsed.password:
        raise ValueError("credentials in the URL are not sent; use a secret path or the signature")
    return url


def new_secret() -> str:
    return "whsec_" + base64.b64encode(random.token_bytes(24)).decode()


@dataclass(frozen=True)
class Webhook:
    webhook_id: str
    url: str
    events: list[str]
    workflow_id: str | None
    tag: str | None
    secrets: list[dict[str, Any]]  # [{"secret", "expires_at"}], newest first
    created_at: str

    def signing_secrets(self, now: float) -> list[str]:
        return [s["secret"] for s in self.secrets if s.get("expires_at") is None or s["expires_at"] > now]

    def to_json(self) -> dict[str, Any]:
        """What listings show: never a secret."""
        return {
            "webhook_id": self.webhook_id,
            "url": self.url,
            "events": self.events,
            "workflow_id": self.workflow_id,
            "tag": self.tag,
            "created_at": self.created_at,
            "secrets_active": len(self.signing_secrets(time.time())),
        }


def _hook(row: tuple[Any, ...]) -> Webhook:
    webhook_id, url, events, workflow_id, tag, secrets, created_at = row
    return Webhook(webhook_id, url, decode(events), workflow_id, tag, decode(secrets), created_at)


def create_webhook(
    db: Database,
    *,
    url: str,
    events: list[str],
    workflow_id: str | None = None,
    tag: str | None = None,
    secret: str | None = None,
) -> tuple[Webhook, str]:
    """Store a subscription; (webhook, its signing secret) — the secret is shown this once."""
    bad = [e for e in events if e not in EVENTS]
    if bad or not events:
        raise ValueError(f"events: one or more of {', '.join(EVENTS)}")
    secret = secret or new_secret()
    hook = Webhook(
        webhook_id=f"wh_{uuid.uuid4().hex}",
        url=url,
        events=list(dict.fromkeys(events)),
        workflow_id=workflow_id,
        tag=tag,
        secrets=[{"secret": secret, "expires_at": None}],
        created_at=utc_now_iso(),
    )
    with db.write() as conn:
        conn.execute(
            INSERT_WEBHOOK,
            {
                "webhook_id": hook.webhook_id,
                "url": hook.url,
                "events": encode(hook.events),
                "workflow_id": workflow_id,
                "tag": tag,
                "secrets": encode(hook.secrets),
                "created_at": hook.created_at,
            },
        )
    return hook, secret


def get_webhook(db: Database, webhook_id: str) -> Webhook | None:
    row = db.query_one(WEBHOOK_OF, (webhook_id,))
    return None if row is None else _hook(row)


def list_webhooks(db: Database) -> list[Webhook]:
    return [_hook(row) for row in db.query(WEBHOOKS)]


def delete_webhook(db: Database, webhook_id: str) -> bool:
    """Stop the subscription; its pending deliveries are cancelled. False when unknown."""
    with db.write() as conn:
        conn.execute(DELETE_WEBHOOK, {"webhook_id": webhook_id, "now": utc_now_iso()})
        if conn.changes() == 0:
            return False
        conn.execute(CANCEL_PENDING, {"webhook_id": webhook_id, "now": utc_now_iso()})
    return True


def rotate_secret(db: Database, webhook_id: str, *, overlap_s: float = ROTATION_OVERLAP_S) -> str | None:
    """A new signing secret; the current ones keep signing for `overlap_s` (receivers switch over)."""
    secret = new_secret()
    with db.write() as conn:
        row = conn.execute(WEBHOOK_OF, (webhook_id,)).fetchone()
        if row is None:
            return None
        now = time.time()
        kept = [
            {
                "secret": s["secret"],
                "expires_at": min(s.get("expires_at") or now + overlap_s, now + overlap_s),
            }
            for s in _hook(row).secrets
            if s.get("expires_at") is None or s["expires_at"] > now
        ]
        conn.execute(
            SET_SECRETS,
            {"webhook_id": webhook_id, "secrets": encode([{"secret": secret, "expires_at": None}, *kept])},
        )
    return secret


def start_secret(db: Database) -> str:
    """The secret signing deliveries to a start's own webhook_url (made on first use)."""
    row = db.query_one(START_KEY)
    if row is not None:
        return str(row[0])
    with db.write() as conn:
        conn.execute(INSERT_START_KEY, {"secret": new_secret(), "now": utc_now_iso()})
        return str(conn.execute(START_KEY).fetchone()[0])


def _delivery(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = (
        "delivery_id", "webhook_id", "run_id", "event", "url", "status", "attempts", "next_attempt_at",
        "retry_until", "last_status_code", "last_error", "created_at", "updated_at",
    )  # fmt: skip
    return dict(zip(keys, row, strict=True))


def deliveries(db: Database, webhook_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The subscription's delivery log, newest first."""
    return [_delivery(row) for row in db.query(DELIVERIES_OF, {"webhook_id": webhook_id, "limit": limit})]


class StillPending(Conflict):
    """A delivery that has not finished (being sent or waiting for a retry) is not redelivered."""


def redeliver(db: Database, webhook_id: str, delivery_id: str) -> dict[str, Any] | None:
    """Send a finished delivery again now (same message id, same body), with a new retry window.
    None when unknown; StillPending while it has not finished."""
    now = time.time()
    with db.write() as conn:
        conn.execute(
            REDELIVER,
            {
                "delivery_id": delivery_id,
                "webhook_id": webhook_id,
                "now": now,
                "until": now + RETRY_WINDOW_S,
                "iso": utc_now_iso(),
            },
        )
        changed = conn.changes() == 1
        row = conn.execute(DELIVERY_OF, (delivery_id,)).fetchone()
    if row is None or row[1] != webhook_id:
        return None
    if not changed:
        raise StillPending(f"delivery {delivery_id} has not finished yet (status pending); retry later")
    return _delivery(row)


# --- runner side ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    webhook_id: str | None
    run_id: str
    event: str
    url: str
    body: bytes | None
    attempts: int
    retry_until: float
    created_at: str


def claim_due(db: Database, *, n: int = 10, claim_s: float = 60.0) -> list[Claimed]:
    """Deliveries due now, claimed for `claim_s` (another runner skips them meanwhile)."""
    now = time.time()
    if db.query_one(DUE_PROBE, (now,)) is None:  # idle: one read, no write lock
        return []
    with db.write() as conn:
        rows = conn.execute(
            CLAIM_DUE, {"until": now + claim_s, "now": now, "n": n, "iso": utc_now_iso()}
        ).fetchall()
    return [
        Claimed(d, w, r, e, u, None if b is None else bytes(b), int(a), float(until), created)
        for d, w, r, e, u, b, a, until, created in rows
    ]


def keep_body(db: Database, delivery_id: str, body: bytes) -> bytes:
    """Store the body of a first attempt (every retry sends the same bytes); the stored one wins."""
    with db.write() as conn:
        conn.execute(SET_BODY, {"delivery_id": delivery_id, "body": body})
        return bytes(conn.execute(BODY_OF, (delivery_id,)).fetchone()[0])


def record_attempt(
    db: Database,
    delivery_id: str,
    *,
    status: str,
    next_attempt_at: float,
    code: int | None = None,
    error: str | None = None,
) -> None:
    db.execute_write(
        RECORD_ATTEMPT,
        {
            "delivery_id": delivery_id,
            "status": status,
            "next_attempt_at": next_attempt_at,
            "code": code,
            "error": None if error is None else error[:500],
            "iso": utc_now_iso(),
        },
    )
