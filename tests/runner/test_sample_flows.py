"""The samples added beside the benchmarks' flows: a subworkflow, a failing code node, an event wait."""

from __future__ import annotations

from shared_store.inbox import append_command
from tests.runner.conftest import Gateway


def test_subflow_sample_completes_through_a_child_run(gateway: Gateway) -> None:
    parent = gateway.start("demo-subflow", {"x": 21})
    gateway.runner()
    done = gateway.wait_status(parent, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["output"]["result"] == 42
    children = gateway.db.query("SELECT run_id FROM runs WHERE parent_run_id = ?", (parent,))
    assert len(children) == 1, "the subflow ran as its own child run"
    assert gateway.run(children[0][0])["status"] == "completed"


def test_failing_code_sample_fails_the_run_with_the_reason(gateway: Gateway) -> None:
    run_id = gateway.start("demo-fail")
    gateway.runner()
    # abstractruntime ends the flow COMPLETED with output.success false; the store marks it failed
    # (runs.output_failed), which is what the API reports.
    done = gateway.wait_status(run_id, "failed", "completed")
    assert done["output_failed"] == 1 and done["output"]["success"] is False
    assert "this code node always raises" in done["output"]["error"]
    assert done["output"]["node"] == "boom"


def test_event_sample_waits_for_its_event_then_ends_with_it(gateway: Gateway) -> None:
    run_id = gateway.start("demo-event")
    gateway.runner()
    gateway.wait(lambda: gateway.run(run_id)["wait_reason"] == "event", "demo-event to wait on demo:go")
    append_command(
        gateway.db, command_id="go", run_id=run_id, type="emit_event",
        payload={"name": "demo:go", "payload": {"n": 7}},
    )  # fmt: skip
    done = gateway.wait_status(run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["output"]["event"]["payload"] == {"n": 7}
