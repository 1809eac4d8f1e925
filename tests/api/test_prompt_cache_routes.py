"""Prompt-cache routes over the API alone (no runner): bad input is refused before anything is stored;
a valid request commits one `llm:prompt_cache` job and, with wait_s=0, answers 202 with its id. The
answers of a real runner: tests/runner/test_local_llm_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Gateway

T = {"provider": "huggingface", "model": "tiny"}
SESSION = "/api/gateway/sessions/s-1/prompt_cache"
VALID: list[tuple[str, str, dict[str, Any] | None, dict[str, Any]]] = [
    ("GET", "/api/gateway/prompt_cache/stats", None, T),
    ("GET", "/api/gateway/prompt_cache/capabilities", None, T),
    ("GET", "/api/gateway/prompt_cache/saved", None, T),
    ("POST", "/api/gateway/prompt_cache/set", {**T, "key": "k"}, {}),
    ("POST", "/api/gateway/prompt_cache/update", {**T, "key": "k", "prompt": "hi"}, {}),
    ("POST", "/api/gateway/prompt_cache/fork", {**T, "from_key": "a", "to_key": "b"}, {}),
    ("POST", "/api/gateway/prompt_cache/clear", T, {}),
    ("POST", "/api/gateway/prompt_cache/prepare_modules", {**T, "namespace": "n", "modules": []}, {}),
    ("POST", "/api/gateway/prompt_cache/save", {**T, "name": "snap", "key": "k"}, {}),
    ("POST", "/api/gateway/prompt_cache/load", {**T, "name": "snap"}, {}),
    ("GET", "/api/gateway/sessions/prompt_cache", None, {}),
    ("GET", f"{SESSION}/status", None, T),
    ("POST", f"{SESSION}/prepare", {**T, "system_prompt": "be brief"}, {}),
    ("POST", f"{SESSION}/clear", T, {}),
    ("POST", f"{SESSION}/rebuild", T, {}),
    ("POST", f"{SESSION}/clear_all", None, {}),
]


@pytest.fixture
def gw(lone_gateway: Gateway) -> Iterator[Gateway]:
    before = lone_gateway.counts()
    yield lone_gateway
    assert lone_gateway.counts() == before, "a refused request wrote something"


def _send(gw: Gateway, method: str, path: str, body: Any, params: dict[str, Any]) -> Any:
    return gw.client.request(method, path, json=body, params=params)


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "status"),
    [
        ("GET", "/api/gateway/prompt_cache/stats", None, {"provider": "huggingface"}, 422),  # no model
        ("GET", "/api/gateway/prompt_cache/capabilities", None, {**T, "color": "red"}, 400),
        ("GET", "/api/gateway/prompt_cache/saved", None, {**T, "wait_s": "-1"}, 422),
        ("POST", "/api/gateway/prompt_cache/set", {**T}, {}, 422),  # no key
        ("POST", "/api/gateway/prompt_cache/set", {**T, "key": ""}, {}, 422),
        ("POST", "/api/gateway/prompt_cache/set", {**T, "key": "k", "ttl_s": -5}, {}, 422),
        ("POST", "/api/gateway/prompt_cache/update", {**T, "key": "k", "messages": "hi"}, {}, 422),
        ("POST", "/api/gateway/prompt_cache/fork", {**T, "from_key": "a"}, {}, 422),
        ("POST", "/api/gateway/prompt_cache/prepare_modules", {**T, "namespace": "n", "modules": [{}] * 13}, {}, 400),
        ("POST", "/api/gateway/prompt_cache/prepare_modules", {**T, "namespace": "n",
                                                               "modules": [{"prompt": "x" * 300_000}]}, {}, 400),
        ("POST", "/api/gateway/prompt_cache/save", {**T, "name": "../etc/passwd", "key": "k"}, {}, 422),
        ("POST", "/api/gateway/prompt_cache/load", {"model": "m", "name": "snap"}, {}, 422),
        ("GET", f"{SESSION}/status", None, {**T, "version": 11}, 422),
        ("POST", f"{SESSION}/prepare", {**T, "modules": [{}] * 13}, {}, 400),
        ("POST", f"{SESSION}/prepare", {**T, "system_prompt": 5}, {}, 422),
        ("POST", "/api/gateway/sessions/%20/prompt_cache/clear", T, {}, 400),
        ("POST", f"{SESSION}/clear", b"{not json", {}, 422),  # as the original answers a non-JSON body
    ],
)  # fmt: skip
def test_bad_input_is_refused_and_stores_nothing(
    gw: Gateway, method: str, path: str, body: Any, params: dict[str, Any], status: int
) -> None:
    if isinstance(body, bytes):
        response = gw.client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        response = _send(gw, method, path, body, params)
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "params"), VALID, ids=[f"{m} {p}" for m, p, _, _ in VALID]
)
def test_valid_request_appends_one_job_and_answers_202(
    lone_gateway: Gateway, method: str, path: str, body: Any, params: dict[str, Any]
) -> None:
    runs_before = lone_gateway.counts()["runs"]
    response = _send(lone_gateway, method, path, body, {**params, "wait_s": 0})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["pending"] is True and answer["ok"] is True
    assert lone_gateway.counts()["runs"] == runs_before + 1
    row = lone_gateway.db.query_one(
        "SELECT workflow_id, status FROM runs WHERE run_id = ?", (answer["child_run_id"],)
    )
    assert row == ("llm:prompt_cache", "queued")


def test_prompt_cache_routes_are_in_the_openapi_spec(lone_gateway: Gateway) -> None:
    spec = lone_gateway.client.get("/openapi.json").json()
    for method, path, _, _ in VALID:
        template = path.replace("/sessions/s-1/", "/sessions/{session_id}/")
        assert method.lower() in spec["paths"][template], template
