"""ABSTRACTGATEWAY_MAX_OUTPUT_BYTES, enforced by real runner processes: a run whose output, a node's
output or a ledger record's result is over the cap fails, saying so, and the value is stored nowhere;
a run under the cap completes beside it.

(The exploit it closes: 200 runs with 5 MB outputs grew a db by GBs and made `GET /runs` a 1 GB body.)
"""

from __future__ import annotations

from shared_store.bundles import put_bundle
from tests.hostile_flows import chain_bundle, code_bundle
from tests.runner.conftest import Gateway
from tests.runner.test_sandbox import _with_end_expression

CAP = 64 * 1024
BIG = 200_000  # characters: a value three times over the cap


def _stored_bytes(gateway: Gateway, run_id: str) -> tuple[int, int]:
    """(the run's stored state, its whole ledger): lengths in bytes."""
    state = gateway.db.query_one("SELECT length(run_json) FROM run_states WHERE run_id = ?", (run_id,))
    ledger = gateway.db.query_one("SELECT sum(length(record)) FROM ledger WHERE run_id = ?", (run_id,))
    return int(state[0]), int(ledger[0] or 0)


def _assert_failed_small(gateway: Gateway, run_id: str, what: str) -> int:
    """The run failed naming `what`, the size and the setting; the refused value is stored nowhere.
    Returns the size of its stored state."""
    view = gateway.wait_status(run_id, "completed", "failed")
    assert view["status"] == "failed", view
    error = str(view["error"])
    assert error.startswith(what) and f"ABSTRACTGATEWAY_MAX_OUTPUT_BYTES={CAP}" in error, error
    size = int(error.split(" is ")[1].split(" bytes")[0])
    assert size > CAP, error
    # The failure record is appended just after the failed state is saved.
    gateway.wait(
        lambda: any(r.get("error") == error for _, r in gateway.ledger(run_id)), "the failure record"
    )
    state, ledger = _stored_bytes(gateway, run_id)
    assert view["output"] is None and state < size and ledger < CAP // 4, (state, ledger)
    assert gateway.ledger(run_id)[-1][1]["status"] == "failed"
    return state


def test_a_node_output_over_the_cap_fails_the_run_and_a_small_run_completes(gateway: Gateway) -> None:
    put_bundle(gateway.db, code_bundle("big", f"def transform(_input):\n    return 'x' * {BIG}"))
    put_bundle(gateway.db, code_bundle("small", "def transform(_input):\n    return 'y' * 1000"))
    big, small = gateway.start("big"), gateway.start("small")
    echo = gateway.start("bench-echo", {"message": "still served"})
    runner = gateway.runner(ABSTRACTGATEWAY_MAX_OUTPUT_BYTES=str(CAP))
    assert _assert_failed_small(gateway, big, "the output of node 'n0' is ") < CAP // 4
    assert gateway.wait_status(small, "completed")["output"]["result"] == "y" * 1000
    assert gateway.wait_status(echo, "completed")["output"]["result"] == "still served"
    refused = [e for e in runner.events() if e.get("event") == "output_too_large"]
    assert [e["run_id"] for e in refused] == [big] and refused[0]["cap"] == CAP


def test_a_run_output_over_the_cap_is_in_neither_the_state_nor_the_closing_record(
    gateway: Gateway,
) -> None:
    # Every node's output stays under the cap (n0 keeps its 20 kB value twice: 40 kB); only the end
    # node's result (the value four times: 80 kB) is over it.
    bundle = code_bundle("grow", "def transform(_input):\n    return 'x' * 20000")
    put_bundle(gateway.db, _with_end_expression(bundle, "value * 4"))
    run_id = gateway.start("grow")
    gateway.runner(ABSTRACTGATEWAY_MAX_OUTPUT_BYTES=str(CAP))
    # What it stored: the state before the end node, n0's 40 kB under the cap (twice over: 60 kB).
    _assert_failed_small(gateway, run_id, "the run's output is ")
    records = [record for _, record in gateway.ledger(run_id)]
    assert not any(
        record.get("status") == "completed" and record.get("node_id") == "end" for record in records
    )


def test_an_effect_record_over_the_cap_is_not_appended(gateway: Gateway) -> None:
    # answer_user echoes its message: the effect's STARTED record holds it before any result does.
    put_bundle(gateway.db, chain_bundle("shout", [
        ("answer_user", {"pinDefaults": {"message": "z" * BIG}, "_inputs": ["message"]}, ["message"]),
    ]))  # fmt: skip
    run_id = gateway.start("shout")
    gateway.runner(ABSTRACTGATEWAY_MAX_OUTPUT_BYTES=str(CAP))
    assert _assert_failed_small(gateway, run_id, "a ledger record of node 'n0' is ") < CAP // 4


def test_the_default_cap_lets_the_same_output_through(gateway: Gateway) -> None:
    put_bundle(gateway.db, code_bundle("big", f"def transform(_input):\n    return 'x' * {BIG}"))
    run_id = gateway.start("big")
    gateway.runner()  # 4 MiB by default
    assert gateway.wait_status(run_id, "completed", "failed")["output"]["result"] == "x" * BIG


def test_a_malformed_cap_stops_the_runner_with_the_reason(gateway: Gateway) -> None:
    runner = gateway.runner(ABSTRACTGATEWAY_MAX_OUTPUT_BYTES="4MB")
    assert runner.proc.wait(60) == 2
    runner.stop()  # closes its log
    assert "ABSTRACTGATEWAY_MAX_OUTPUT_BYTES must be a whole number" in runner.log_path.read_text()


def test_under_a_cap_smaller_than_any_record_the_run_still_fails_with_its_failure_record(
    gateway: Gateway,
) -> None:
    # 200 bytes: no ledger record fits (a failure record alone is ~300). The failure record is the
    # gateway's own, its error bounded: it is written anyway, and the worker lives on to serve the
    # next run (before, the refused failure record escaped the worker and killed its thread).
    put_bundle(gateway.db, code_bundle("tiny-cap", "def transform(_input):\n    return 'x' * 1000"))
    first = gateway.start("tiny-cap")
    gateway.runner(ABSTRACTGATEWAY_MAX_OUTPUT_BYTES="200")  # one worker: it must survive the first
    view = gateway.wait_status(first, "completed", "failed")
    assert view["status"] == "failed" and "ABSTRACTGATEWAY_MAX_OUTPUT_BYTES=200" in str(view["error"]), view
    gateway.wait(
        lambda: gateway.ledger(first) and gateway.ledger(first)[-1][1]["status"] == "failed", "record"
    )
    assert gateway.ledger(first)[-1][1]["error"] == view["error"]
    second = gateway.start("tiny-cap")  # the same worker takes the next run and fails it the same way
    assert gateway.wait_status(second, "completed", "failed")["status"] == "failed"
