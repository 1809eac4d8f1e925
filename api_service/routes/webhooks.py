"""Webhook subscriptions: create, list, delete, rotate the secret, the delivery log, redeliver."""

from __future__ import annotations

from starlette.requests import Request

from shared_store import webhooks as store

from ..access import ADMIN
from ..errors import ApiError
from ..http import ApiRoute, blocking, reading
from ..ops_schemas import (
    Delivery,
    DeliveryList,
    DeliveryQuery,
    Webhook,
    WebhookDeleted,
    WebhookList,
    WebhookRequest,
    WebhookSecret,
)
from . import gateway

MAX_DELIVERIES = 1_000


def _not_found(webhook_id: str) -> ApiError:
    return ApiError(404, f"Webhook '{webhook_id}' not found")


async def create_webhook(request: Request, body: WebhookRequest) -> object:
    """Subscribe a URL to run events; the answer holds the signing secret (shown this once)."""
    try:
        store.check_url(body.url)
    except ValueError as exc:
        raise ApiError(422, f"url: {exc}") from None
    hook, secret = await blocking(
        store.create_webhook,
        gateway(request).db,
        url=body.url,
        events=list(body.events),
        workflow_id=body.workflow_id,
        tag=body.tag,
    )
    request.state.audit = {"webhook_id": hook.webhook_id}
    return {**hook.to_json(), "secret": secret}


async def list_webhooks(request: Request) -> object:
    """Subscriptions (never their secrets), and the secret signing per-start webhook_url deliveries."""
    db = gateway(request).db
    secret = await blocking(store.start_secret, db)
    hooks = await reading(store.list_webhooks, db)
    return {"items": [hook.to_json() for hook in hooks], "start_secret": secret}


async def get_webhook(request: Request) -> object:
    """One subscription."""
    webhook_id = request.path_params["webhook_id"]
    hook = await reading(store.get_webhook, gateway(request).db, webhook_id)
    if hook is None:
        raise _not_found(webhook_id)
    return hook.to_json()


async def delete_webhook(request: Request) -> object:
    """Unsubscribe; pending deliveries are cancelled."""
    webhook_id = request.path_params["webhook_id"]
    if not await blocking(store.delete_webhook, gateway(request).db, webhook_id):
        raise _not_found(webhook_id)
    request.state.audit = {"webhook_id": webhook_id}
    return {"deleted": True}


async def rotate_secret(request: Request) -> object:
    """A new signing secret; the previous one keeps signing (beside it) for a day."""
    webhook_id = request.path_params["webhook_id"]
    secret = await blocking(store.rotate_secret, gateway(request).db, webhook_id)
    if secret is None:
        raise _not_found(webhook_id)
    request.state.audit = {"webhook_id": webhook_id}
    return {"webhook_id": webhook_id, "secret": secret}


async def list_deliveries(request: Request, query: DeliveryQuery) -> object:
    """The subscription's delivery log, newest first: status, attempts, last answer or error."""
    webhook_id = request.path_params["webhook_id"]
    db = gateway(request).db
    if await reading(store.get_webhook, db, webhook_id) is None:
        raise _not_found(webhook_id)
    items = await reading(store.deliveries, db, webhook_id, limit=min(query.limit, MAX_DELIVERIES))
    return {"items": items}


async def redeliver(request: Request) -> object:
    """Send a delivery again (same message id and body) with a new day of retries."""
    webhook_id, delivery_id = request.path_params["webhook_id"], request.path_params["delivery_id"]
    db = gateway(request).db
    if await reading(store.get_webhook, db, webhook_id) is None:
        raise _not_found(webhook_id)
    delivery = await blocking(store.redeliver, db, webhook_id, delivery_id)
    if delivery is None:
        raise ApiError(404, f"Delivery '{delivery_id}' not found for webhook '{webhook_id}'")
    request.state.audit = {"webhook_id": webhook_id, "delivery_id": delivery_id}
    return delivery


_TAGS = ["webhooks"]
_BASE = "/api/gateway/webhooks"
routes = [
    ApiRoute(_BASE, create_webhook, methods=["POST"], summary="Subscribe to run events", tags=_TAGS,
             body=WebhookRequest, response=Webhook, errors=(413, 422), needs=ADMIN),
    ApiRoute(_BASE, list_webhooks, methods=["GET"], summary="List webhook subscriptions", tags=_TAGS,
             response=WebhookList, needs=ADMIN),
    ApiRoute(f"{_BASE}/{{webhook_id}}", get_webhook, methods=["GET"], summary="A webhook subscription",
             tags=_TAGS, response=Webhook, errors=(404,), needs=ADMIN),
    ApiRoute(f"{_BASE}/{{webhook_id}}", delete_webhook, methods=["DELETE"], summary="Unsubscribe",
             tags=_TAGS, response=WebhookDeleted, errors=(404,), needs=ADMIN),
    ApiRoute(f"{_BASE}/{{webhook_id}}/rotate", rotate_secret, methods=["POST"],
             summary="Rotate a webhook's signing secret", tags=_TAGS, response=WebhookSecret, errors=(404,), needs=ADMIN),
    ApiRoute(f"{_BASE}/{{webhook_id}}/deliveries", list_deliveries, methods=["GET"],
             summary="A webhook's delivery log", tags=_TAGS, query=DeliveryQuery, response=DeliveryList,
             errors=(404,), needs=ADMIN),
    ApiRoute(f"{_BASE}/{{webhook_id}}/deliveries/{{delivery_id}}/redeliver", redeliver, methods=["POST"],
             summary="Send a delivery again", tags=_TAGS, response=Delivery, errors=(404, 409), needs=ADMIN),
]  # fmt: skip
