"""One-off calls on a run over the API: start it, send it a command, wait for a state."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.api.common import API, BenchFailure
from bench.api.http_client import api_json
from bench.api.processes import Proc


def wait_run(
    port: int, run_id: str, pred: Callable[[dict[str, Any]], bool], procs: list[Proc], cap_s: float
) -> dict:
    deadline = time.monotonic() + cap_s
    while True:
        view = api_json(port, "GET", f"{API}/runs/{run_id}")
        if pred(view):
            return view
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise BenchFailure(f"run {run_id} not in the expected state after {cap_s:g} s: {view}")
        time.sleep(0.02)


def start_run(port: int, bundle_id: str, input_data: dict[str, Any]) -> str:
    return api_json(port, "POST", f"{API}/runs/start", {"bundle_id": bundle_id, "input_data": input_data})[
        "run_id"
    ]


def command(port: int, run_id: str, type_: str, payload: dict[str, Any]) -> None:
    body = {"command_id": f"bench-{uuid.uuid4().hex}", "run_id": run_id, "type": type_, "payload": payload}
    answer = api_json(port, "POST", f"{API}/commands", body)
    if answer.get("accepted") is not True:
        raise BenchFailure(f"command {type_} on {run_id} not accepted: {answer}")
