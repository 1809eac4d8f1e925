"""One declaration per request rule: what the API accepts the runner accepts, and what the runner
would refuse the API refuses with 422 naming the field and the bound (nothing stored).

The boundary values are read off the shared Structs themselves (shared_store.contracts), for every
constrained field of every media job request and command payload: the bound itself (accepted) and one
step past it (refused). Each goes to the real API over real Hypercorn; an accepted one is then read
back as stored and handed to the runner's real validation (`apply_default`, which a media job runs
before its backend, also for prompt-cache jobs, and the command check `runner_service.commands._apply` /
`events` run); a refused
one is handed to the runner's validation as sent, which must refuse it too.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import msgspec
import pytest
from msgspec import inspect as mi

from runner_service.commands import Rejected
from runner_service.events import BadEvent
from runner_service.media.backends import BadMediaRequest
from runner_service.media.defaults import apply_default
from shared_store.contracts import COMMAND_PAYLOADS, MEDIA_REQUESTS, check_command_payload
from shared_store.contracts.media import MAX_TTS_CHARS
from shared_store.contracts.prompt_cache import MAX_MODULES, PARAMS
from shared_store.inbox import get_command
from shared_store.starts import start_request

from .conftest import Gateway
from .test_media_routes import artifacts, target

# kind -> (the route under /api/gateway, the smallest valid body: "@audio"/"@image" are artifacts)
MEDIA_ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "tts": ("runs/{run}/voice/tts", {"text": "hi"}),
    "transcribe": ("runs/{run}/audio/transcribe", {"audio_artifact": {"$artifact": "@audio"}}),
    "image_generate": ("runs/{run}/images/generate", {"prompt": "x"}),
    "image_edit": ("runs/{run}/images/edit", {"prompt": "x", "image_artifact": {"$artifact": "@image"}}),
    "video_generate": ("runs/{run}/videos/generate", {"prompt": "x"}),
    "video_from_image": ("runs/{run}/videos/from_image", {"image_artifact": {"$artifact": "@image"}}),
    "music_generate": ("runs/{run}/music/generate", {"prompt": "x"}),
    "kg_query": ("kg/query", {"scope": "all"}),
}
COMMAND_BASES: dict[str, dict[str, Any]] = {"emit_event": {"name": "ev"}}
TARGET = {"provider": "p", "model": "m"}
# prompt-cache operation -> (the POST route, the smallest valid body); its params rule is PARAMS[op]
PROMPT_CACHE_ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "set": ("prompt_cache/set", {**TARGET, "key": "k"}),
    "update": ("prompt_cache/update", {**TARGET, "key": "k"}),
    "fork": ("prompt_cache/fork", {**TARGET, "from_key": "a", "to_key": "b"}),
    "clear": ("prompt_cache/clear", TARGET),
    "prepare_modules": ("prompt_cache/prepare_modules", {**TARGET, "namespace": "n", "modules": []}),
    "save": ("prompt_cache/save", {**TARGET, "name": "n1", "key": "k"}),
    "load": ("prompt_cache/load", {**TARGET, "name": "n1"}),
    "session_prepare": ("sessions/s-1/prompt_cache/prepare", TARGET),
}
# Values whose meaning is not the rule's: a kg scope that needs a run or session named, ids that
# must name something that exists. Their bounds are the same Meta as the fields tested.
CONTEXTUAL = {("kg_query", "scope", "run"), ("kg_query", "scope", "session")}
REFERENCES = {("kg_query", "run_id"), ("kg_query", "session_id"), ("session_prepare", "session_id")}
_unique = count()


@dataclass(frozen=True)
class Case:
    kind: str
    field: str
    value: Any
    accepted: bool

    @property
    def id(self) -> str:
        shown = f"len{len(self.value)}" if isinstance(self.value, str) else repr(self.value)
        return f"{self.kind}-{self.field}-{shown}-{'ok' if self.accepted else 'refused'}"


def _text(length: int) -> str:
    """A string of `length` characters, unique per call (request_id is an idempotency key)."""
    tag = string.ascii_letters[next(_unique) % len(string.ascii_letters)] + uuid.uuid4().hex
    return (tag * (length // len(tag) + 1))[:length]


def _bounds(kind: str, name: str, type_: mi.Type) -> Iterator[tuple[Any, bool]]:
    if isinstance(type_, mi.UnionType):
        for inner in type_.types:
            if not isinstance(inner, mi.NoneType):
                yield from _bounds(kind, name, inner)
        return
    if isinstance(type_, mi.IntType):
        low = type_.ge if type_.ge is not None else None if type_.gt is None else type_.gt + 1
        high = type_.le if type_.le is not None else None if type_.lt is None else type_.lt - 1
        if low is not None:
            yield low, True
            yield low - 1, False
        if high is not None:
            yield high, True
            yield high + 1, False
        if type_.multiple_of and low is not None:
            yield low + 1, False  # inside the range, not a multiple
    elif isinstance(type_, mi.FloatType):
        for edge, inclusive, step in ((type_.ge, True, -1), (type_.gt, False, -1), (type_.le, True, 1)):
            if edge is not None:
                eps = max(abs(edge), 1.0) * 1e-6
                yield (edge, True) if inclusive else (edge + eps, True)
                yield (edge + step * eps, False) if inclusive else (edge, False)
    elif isinstance(type_, mi.StrType):
        if type_.max_length is not None:
            yield _text(type_.max_length), True
            yield _text(type_.max_length + 1), False
        if type_.min_length:
            yield _text(type_.min_length), True
            yield _text(type_.min_length - 1), False
    elif isinstance(type_, mi.LiteralType):
        for value in type_.values:
            if (kind, name, value) not in CONTEXTUAL:
                yield value, True
        yield "not-a-choice", False


def _cases(structs: dict[str, type[msgspec.Struct]]) -> list[Case]:
    cases = []
    for kind, struct in structs.items():
        info = mi.type_info(struct)
        assert isinstance(info, mi.StructType)
        for field in info.fields:
            if (kind, field.encode_name) in REFERENCES:
                continue
            for value, accepted in _bounds(kind, field.encode_name, field.type):
                cases.append(Case(kind, field.encode_name, value, accepted))
    return cases


MEDIA_CASES = _cases(MEDIA_REQUESTS)
COMMAND_CASES = _cases(COMMAND_PAYLOADS)
PROMPT_CACHE_CASES = _cases({op: PARAMS[op] for op in PROMPT_CACHE_ROUTES})


def test_every_rule_has_boundary_cases() -> None:
    """The walk finds the bounds that drifted before (so the parametrization is not vacuous)."""
    found = {(c.kind, c.field, c.accepted) for c in MEDIA_CASES + COMMAND_CASES + PROMPT_CACHE_CASES}
    for kind, field in [
        ("tts", "text"),
        ("image_generate", "width"),
        ("video_generate", "height"),
        ("music_generate", "duration_s"),
        ("music_generate", "format"),
        ("kg_query", "limit"),
        ("emit_event", "name"),
        ("update_schedule", "repeat_count"),
    ]:
        assert {(kind, field, True), (kind, field, False)} <= found, (kind, field)  # fmt: skip
    assert set(MEDIA_REQUESTS) == set(MEDIA_ROUTES)


# `target` (the queued run the jobs attach to) and `artifacts` (its inputs): the media routes test's.
__all__ = ["artifacts", "target"]


def _fill(value: Any, artifacts: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, artifacts) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("@"):
        return artifacts[value[1:]]
    return value


def _runner_refuses_media(gw: Gateway, kind: str, request: dict[str, Any]) -> str | None:
    """The runner's own check of a job request (a media job runs it before its backend)."""
    try:
        apply_default(gw.db, kind, request)
    except BadMediaRequest as exc:
        return str(exc)
    return None


def _post_media(gw: Gateway, target: str, artifacts: dict[str, str], case: Case) -> tuple[Any, dict]:
    path, base = MEDIA_ROUTES[case.kind]
    body = {**_fill(base, artifacts), case.field: case.value}
    response = gw.client.post(f"/api/gateway/{path.format(run=target)}", json=body, params={"wait_s": 0})
    return response, body


@pytest.mark.parametrize("case", MEDIA_CASES, ids=lambda c: c.id)
def test_media_rule_is_one_rule(
    lone_gateway: Gateway, target: str, artifacts: dict[str, str], case: Case
) -> None:
    gw = lone_gateway
    before = gw.counts()
    response, body = _post_media(gw, target, artifacts, case)
    if case.accepted:
        assert response.status_code in (200, 202), response.text
        child = response.json()["child_run_id"]
        stored = (start_request(gw.db, child) or {})["media"]["request"]
        assert stored.get(case.field) == case.value or case.field == "request_id"
        assert _runner_refuses_media(gw, case.kind, stored) is None  # what the API took, the runner takes
    else:
        assert response.status_code == 422, response.text
        assert f"$.{case.field}" in response.json()["detail"]
        assert gw.counts() == before, "a refused request stored something"
        refusal = _runner_refuses_media(gw, case.kind, body)  # and the runner would refuse it too
        assert refusal is not None and f"$.{case.field}" in refusal, refusal


@pytest.mark.parametrize("case", COMMAND_CASES, ids=lambda c: c.id)
def test_command_rule_is_one_rule(lone_gateway: Gateway, target: str, case: Case) -> None:
    gw = lone_gateway
    before = gw.counts()
    payload = {**COMMAND_BASES.get(case.kind, {}), case.field: case.value}
    command_id = uuid.uuid4().hex
    body = {"command_id": command_id, "run_id": target, "type": case.kind, "payload": payload}
    response = gw.client.post("/api/gateway/commands", json=body)
    refuse = BadEvent if case.kind == "emit_event" else Rejected  # as events.py / commands.py call it
    if case.accepted:
        assert response.status_code == 200, response.text
        stored = get_command(gw.db, command_id)
        assert stored is not None and stored.payload == payload
        check_command_payload(case.kind, stored.payload, refuse=refuse)  # the runner accepts it
    else:
        assert response.status_code == 422, response.text
        assert f"$.payload.{case.field}" in response.json()["detail"]
        assert gw.counts() == before, "a refused command was stored"
        with pytest.raises(refuse, match=rf"\$\.payload\.{case.field}"):
            check_command_payload(case.kind, payload, refuse=refuse)


def test_tts_text_the_runner_refuses_is_refused_by_the_api(
    lone_gateway: Gateway, target: str, artifacts: dict[str, str]
) -> None:
    """The drift this rule closes: the API took 100,000 characters, the runner refused over 20,000."""
    over = Case("tts", "text", "a" * (MAX_TTS_CHARS + 1), False)
    assert _runner_refuses_media(lone_gateway, "tts", {"text": over.value}) is not None
    before = lone_gateway.counts()
    response, _ = _post_media(lone_gateway, target, artifacts, over)
    assert response.status_code == 422 and "length <= 20000" in response.json()["detail"], response.text
    assert lone_gateway.counts() == before
    at = Case("tts", "text", "a" * MAX_TTS_CHARS, True)
    response, _ = _post_media(lone_gateway, target, artifacts, at)
    assert response.status_code == 202, response.text
    stored = (start_request(lone_gateway.db, response.json()["child_run_id"]) or {})["media"]["request"]
    assert _runner_refuses_media(lone_gateway, "tts", stored) is None


@pytest.mark.parametrize("case", PROMPT_CACHE_CASES, ids=lambda c: c.id)
def test_prompt_cache_rule_is_one_rule(lone_gateway: Gateway, case: Case) -> None:
    gw = lone_gateway
    before = gw.counts()
    path, base = PROMPT_CACHE_ROUTES[case.kind]
    body = {**base, case.field: case.value}
    response = gw.client.post(f"/api/gateway/{path}", json=body, params={"wait_s": 0})
    params = {**body, "session_id": "s-1"} if case.kind.startswith("session_") else body
    if case.accepted:
        assert response.status_code == 202, response.text
        stored = (start_request(gw.db, response.json()["child_run_id"]) or {})["media"]["request"]
        assert stored["operation"] == case.kind and stored["params"][case.field] == case.value
        assert _runner_refuses_media(gw, "prompt_cache", stored) is None
    else:
        assert response.status_code == 422, response.text
        assert f"$.{case.field}" in response.json()["detail"]
        assert gw.counts() == before, "a refused request stored something"
        refusal = _runner_refuses_media(gw, "prompt_cache", {"operation": case.kind, "params": params})
        assert refusal is not None and f"$.params.{case.field}" in refusal, refusal


def test_prompt_cache_modules_limit_is_one_rule(lone_gateway: Gateway) -> None:
    """The modules limit (a count and a size, not a Meta bound): 400 at the API, refused by the runner."""
    too_many = [{"content": "x"}] * (MAX_MODULES + 1)
    body = {**TARGET, "namespace": "n", "modules": too_many}
    before = lone_gateway.counts()
    response = lone_gateway.client.post("/api/gateway/prompt_cache/prepare_modules", json=body)
    assert response.status_code == 400 and "at most 12" in response.json()["detail"], response.text
    assert lone_gateway.counts() == before
    refusal = _runner_refuses_media(
        lone_gateway, "prompt_cache", {"operation": "prepare_modules", "params": body}
    )
    assert refusal is not None and "at most 12" in refusal
    body["modules"] = too_many[:MAX_MODULES]
    response = lone_gateway.client.post(
        "/api/gateway/prompt_cache/prepare_modules", json=body, params={"wait_s": 0}
    )
    assert response.status_code == 202, response.text
    stored = (start_request(lone_gateway.db, response.json()["child_run_id"]) or {})["media"]["request"]
    assert _runner_refuses_media(lone_gateway, "prompt_cache", stored) is None
