"""schemathesis against our own /openapi.json, over HTTP to the real Hypercorn server (no runner).

Every operation gets positive and negative inputs (the examples, coverage and fuzzing phases, one
pytest test per operation), then the stateful phase chains operations along the links schemathesis
infers from the schema (a started run's id fed to the run routes, a bundle listing's ids to the
bundle routes, ...). Checks on every response: no 5xx, the documented status code, content type and
headers, and a body that conforms to the documented schema (each SSE event too).

Generated ids are swapped for real ones part of the time (runs that completed, wait on a user, are
queued or scheduled; bundles; a command), so found things are checked as well as 404s.

Deterministic by default, so CI is reproducible. Environment knobs for long runs:
  FUZZ_EXAMPLES=N        examples per operation and stateful scenarios (default 25)
  FUZZ_STATEFUL_STEPS=N  steps per stateful scenario (default 10)
  FUZZ_RANDOM=1          a fresh random seed each run (the failure report shows how to reproduce)
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction
from schemathesis.config._health_check import HealthCheck
from schemathesis.engine import Status, events, from_schema
from schemathesis.specs.openapi import checks as openapi_checks

from api_service.app import openapi_document
from shared_store.bundles import put_bundle
from shared_store.contracts import COMMAND_PAYLOADS

from ..api.conftest import TOKEN, Gateway
from .conftest import SENT

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
STATEFUL_STEPS = int(os.environ.get("FUZZ_STATEFUL_STEPS", "10"))
DETERMINISTIC = os.environ.get("FUZZ_RANDOM", "") in ("", "0")

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.response_schema_conformance,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
]
CHECK_NAMES = [check.__name__ for check in CHECKS]

# Real ids, filled by the `known_ids` fixture before any case is generated.
KNOWN: dict[str, list[str]] = {}


def served_spec() -> dict[str, Any]:
    """The document /openapi.json serves, built the way create_app builds it (a test below checks that
    the live server serves exactly this). The pytest plugin needs the schema at collection time: its
    fixture-based loader does not work with pytest 9."""
    return msgspec.json.decode(msgspec.json.encode(openapi_document()))


SPEC = served_spec()


def _with_known(value: Any, name: str) -> Any:
    return st.sampled_from([value, *KNOWN.get(name, [])])


def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Each id as generated or a real one. A stream's run: only one that ended (else the stream stays
    open until the request timeout); a DELETE: only bundles kept for that, so the sample bundles stay
    for the operations after it."""
    if not path_parameters:
        return st.just(path_parameters)
    operation = context.operation
    stream = operation is not None and operation.path.endswith("/stream")
    delete = operation is not None and operation.method.upper() == "DELETE"
    pools = {"run_id": "terminal_run_id"} if stream else {"bundle_id": "victim_bundle_id"} if delete else {}
    return st.fixed_dictionaries(
        {name: _with_known(value, pools.get(name, name)) for name, value in path_parameters.items()}
    )


def flatmap_body(context: Any, body: Any) -> Any:
    """Bodies naming a bundle, run or command type: as generated or a real one, so starts, schedules
    and commands get past the lookups and are checked on their 200s too."""
    if not isinstance(body, dict):
        return st.just(body)
    fields = {name: _with_known(value, name) for name, value in body.items() if name in KNOWN}
    if "type" in body and "command_id" in body:
        fields["type"] = st.sampled_from([body["type"], *COMMAND_PAYLOADS])
    if not fields:
        return st.just(body)
    return st.fixed_dictionaries(fields).map(lambda chosen: {**body, **chosen})


def after_call(context: Any, case: Any, response: Any) -> None:
    key = f"{case.operation.label} -> {response.status_code}"
    SENT[key] = SENT.get(key, 0) + 1


def make_schema(*, phases: list[str], spec: dict[str, Any] = SPEC) -> Any:
    schema = schemathesis.openapi.from_dict(spec)
    schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"}, request_timeout=5)
    schema.config.generation.update(max_examples=EXAMPLES, deterministic=DETERMINISTIC, database="none")
    schema.config.phases.update(phases=phases)
    schema.config.phases.stateful.max_steps = STATEFUL_STEPS
    schema.config.checks.update(included_check_names=CHECK_NAMES)
    schema.config.suppress_health_check = [HealthCheck.all]
    for hook in (flatmap_path_parameters, flatmap_body, after_call):
        schema.hook(hook)
    return schema


schema = make_schema(phases=["examples", "coverage", "fuzzing"])

# Links for the stateful phase (schemathesis infers the bundle routes' by itself): a listed bundle to
# start and schedule, a started or scheduled run's id to the run routes and to commands, a command's
# id to its status.
RUN_ROUTES = ["get_run", "get_input_data", "history_bundle", "list_artifacts", "ledger"]


def with_links(spec: dict[str, Any]) -> dict[str, Any]:
    spec = msgspec.json.decode(msgspec.json.encode(spec))
    paths = spec["paths"]
    run_links = {
        name: {"operationId": f"{name}_get", "parameters": {"run_id": "$response.body#/run_id"}}
        for name in RUN_ROUTES
    }
    run_links["post_command"] = {
        "operationId": "post_command_post",
        "requestBody": {
            "command_id": "$response.body#/run_id",
            "run_id": "$response.body#/run_id",
            "type": "pause",
        },
    }
    for path in ("/api/gateway/runs/start", "/api/gateway/runs/schedule"):
        paths[path]["post"]["responses"]["200"]["links"] = run_links
    first_bundle = "$response.body#/items/0/bundle_id"
    paths["/api/gateway/bundles"]["get"]["responses"]["200"]["links"] = {
        "start_run": {"operationId": "start_run_post", "requestBody": {"bundle_id": first_bundle}},
        "schedule_run": {
            "operationId": "schedule_run_post",
            "requestBody": {"bundle_id": first_bundle, "interval": "1h"},
        },
    }
    paths["/api/gateway/commands"]["post"]["responses"]["200"]["links"] = {
        "command_status": {
            "operationId": "command_status_get",
            "parameters": {"command_id": "$request.body#/command_id"},
        }
    }
    return spec


def renamed_bundle(path: Path, bundle_id: str) -> bytes:
    """A sample .flow with another bundle id."""
    out = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "manifest.json":
                data = json.dumps({**json.loads(data), "bundle_id": bundle_id}).encode()
            target.writestr(info.filename, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def known_ids(fuzz_gateway: Gateway, sample_runs: dict[str, str], flows: Path) -> dict[str, list[str]]:
    """Runs in every state a client meets: completed (with a ledger), waiting on a user, queued, a
    scheduled parent; the bundles; a command."""
    gw = fuzz_gateway
    done, ask = sample_runs["done"], sample_runs["ask"]
    queued = gw.start("bench-echo", {"message": "queued"})
    scheduled = gw.client.post(
        "/api/gateway/runs/schedule", json={"bundle_id": "bench-echo", "interval": "1h"}
    ).json()["run_id"]
    gw.command(queued, "pause", {"reason": "fuzz"})
    victims = [f"fuzz-victim-{n}" for n in range(3)]
    for victim in victims:
        put_bundle(gw.db, renamed_bundle(flows / "bench-echo@1.0.0.flow", victim))
    (command_id,) = gw.db.query_one("SELECT command_id FROM commands ORDER BY seq DESC LIMIT 1")  # type: ignore[misc]
    KNOWN.update(
        run_id=[done, ask, queued, scheduled],
        terminal_run_id=[done],
        bundle_id=["bench-echo", "bench-ask", "bench-echo@1.0.0"],
        victim_bundle_id=victims,
        flow_id=["echo", "ask", "bench-echo@1.0.0:echo"],
        command_id=[command_id],
    )
    return KNOWN


def test_fuzzed_schema_is_the_served_one(fuzz_gateway: Gateway) -> None:
    served = fuzz_gateway.client.get("/openapi.json")
    assert served.status_code == 200 and served.json() == SPEC


@schema.parametrize()
def test_every_operation(case: Any, fuzz_gateway: Gateway, known_ids: dict[str, list[str]]) -> None:
    case.call_and_validate(base_url=fuzz_gateway.url, checks=CHECKS)


def test_stateful_sequences(fuzz_gateway: Gateway, known_ids: dict[str, list[str]]) -> None:
    """The stateful phase as `schemathesis run` does it (its engine copes with a server whose state
    moves under it, which Hypothesis' own state machine runner reports as flaky)."""
    stateful = make_schema(phases=["stateful"], spec=with_links(SPEC))
    stateful.config.update(base_url=fuzz_gateway.url)
    if not DETERMINISTIC:
        stateful.config.seed = int.from_bytes(os.urandom(4))
    failures: list[str] = []
    scenarios = 0
    for event in from_schema(stateful).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            if event.status == Status.FAILURE:
                failures += _describe(event.recorder)
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"error: {event.info.format() if hasattr(event, 'info') else event}")
    assert not failures, "\n\n".join(failures)
    assert scenarios > 0


def _describe(recorder: Any) -> list[str]:
    out = []
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            interaction = recorder.interactions.get(case_id)
            request = f"{interaction.request.method} {interaction.request.uri}" if interaction else "?"
            body = interaction.request.body if interaction else None
            response = interaction.response if interaction else None
            answer = f"{response.status_code} {response.content[:500]!r}" if response is not None else "?"
            out.append(
                f"{check.name}: {check.failure_info.failure.title}\n  {request} body={body!r}\n  -> {answer}"
            )
    return out
