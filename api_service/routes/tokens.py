"""Minted tokens: an admin issues short-lived, scope-limited tokens (optionally for one run or one
session: a browser page, a bot) and revokes them. The token is shown once, in the mint answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, cast

from msgspec import Meta, Struct
from starlette.requests import Request

from shared_store import api_tokens

from ..access import ADMIN, SCOPES, mint, principal_of
from ..errors import ApiError
from ..http import ApiRoute, blocking, reading
from ..middleware.auth import bearer_token, token_fingerprint
from . import gateway

Scope = Annotated[str, Meta(pattern="^(read|run|admin)$")]
Label = Annotated[str, Meta(max_length=200)]
RefId = Annotated[str, Meta(min_length=1, max_length=200)]


class MintRequest(Struct, forbid_unknown_fields=True):
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=3)]
    ttl_s: Annotated[float, Meta(gt=0)] = 3600.0
    run_id: RefId | None = None
    session_id: RefId | None = None
    label: Label | None = None


class MintedToken(Struct):
    token: str
    token_id: str
    scopes: list[str]
    expires_at: str
    run_id: str | None = None
    session_id: str | None = None
    label: str | None = None


class TokenItem(Struct):
    token_id: str
    scopes: list[str]
    expires_at: str
    issued_at: str
    run_id: str | None = None
    session_id: str | None = None
    label: str | None = None
    revoked_at: str | None = None


class TokenList(Struct):
    items: list[TokenItem]


class RevokeResponse(Struct):
    token_id: str
    revoked: bool


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat()


async def mint_token(request: Request, body: MintRequest) -> object:
    """Mint a signed token that expires after `ttl_s` (capped by ABSTRACTGATEWAY_TOKEN_MAX_TTL_S),
    with some of the caller's scopes, optionally limited to one run (`run_id`) or one session."""
    gw = gateway(request)
    if gw.token_secret is None:
        raise ApiError(409, "this server has no token secret: minting is unavailable")
    if body.run_id is not None and body.session_id is not None:
        raise ApiError(422, "a token is restricted to a run_id or a session_id, not both")
    if body.ttl_s > gw.settings.token_max_ttl_s:
        raise ApiError(
            422,
            f"ttl_s {body.ttl_s:g} exceeds {gw.settings.token_max_ttl_s:g} (ABSTRACTGATEWAY_TOKEN_MAX_TTL_S)",
        )
    scopes = tuple(s for s in SCOPES if s in body.scopes)
    missing = set(scopes) - principal_of(cast(dict[str, Any], request.scope)).scopes
    if missing:
        raise ApiError(403, f"cannot grant scopes this token lacks: {', '.join(sorted(missing))}")
    token, claims = mint(gw.token_secret, scopes, body.ttl_s, run_id=body.run_id, session_id=body.session_id)
    presented = bearer_token(request.scope)
    await blocking(
        api_tokens.record_token,
        gw.db,
        token_id=claims.jti,
        scopes=scopes,
        expires_at=claims.exp,
        run_id=body.run_id,
        session_id=body.session_id,
        label=body.label,
        issued_by=token_fingerprint(presented) if presented else None,
    )
    request.state.audit = {"token_id": claims.jti, "scopes": " ".join(scopes)}
    return MintedToken(
        token, claims.jti, list(scopes), _iso(claims.exp), body.run_id, body.session_id, body.label
    )


async def list_tokens(request: Request) -> object:
    """Minted tokens not yet expired (never the tokens themselves), revoked ones with when."""
    records = await reading(api_tokens.list_tokens, gateway(request).db)
    return TokenList(
        [
            TokenItem(
                r.token_id,
                list(r.scopes),
                _iso(r.expires_at),
                r.issued_at,
                r.run_id,
                r.session_id,
                r.label,
                r.revoked_at,
            )
            for r in records
        ]
    )


async def revoke_token(request: Request) -> object:
    """Revoke a minted token: refused from the next request on (idempotent)."""
    token_id = request.path_params["token_id"]
    result = await blocking(api_tokens.revoke_token, gateway(request).db, token_id)
    if result is None:
        raise ApiError(404, f"Token '{token_id}' not found")
    return RevokeResponse(token_id, True)


_TAGS = ["tokens"]
routes = [
    ApiRoute(
        "/api/gateway/tokens",
        mint_token,
        methods=["POST"],
        summary="Mint a short-lived token",
        tags=_TAGS,
        body=MintRequest,
        response=MintedToken,
        errors=(403, 409, 422),
        needs=ADMIN,
    ),
    ApiRoute(
        "/api/gateway/tokens",
        list_tokens,
        methods=["GET"],
        summary="List minted tokens",
        tags=_TAGS,
        response=TokenList,
        needs=ADMIN,
    ),
    ApiRoute(
        "/api/gateway/tokens/{token_id}",
        revoke_token,
        methods=["DELETE"],
        summary="Revoke a minted token",
        tags=_TAGS,
        response=RevokeResponse,
        errors=(404,),
        needs=ADMIN,
    ),
]
