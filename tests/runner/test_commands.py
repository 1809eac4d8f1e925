"""Each command type has its effect, applied by a real runner process, with a durable outcome."""

from __future__ import annotations

from shared_store.inbox import append_command
from tests.runner.conftest import Gateway


def _cmd(gateway: Gateway, command_id: str, run_id: str, type: str, **payload: object) -> None:
    assert append_command(
        gateway.db, command_id=command_id, run_id=run_id, type=type, payload=payload
    ).accepted


def test_pause_stops_a_run_until_resume(gateway: Gateway) -> None:
    run_id = gateway.start("bench-tick", {"n": 150, "delay": 0.01})
    gateway.runner()
    gateway.wait(lambda: gateway.run(run_id)["ledger_len"] > 4, "the run to make progress")
    _cmd(gateway, "p1", run_id, "pause", reason="lunch")
    gateway.wait(lambda: gateway.command("p1")[0] != "pending", "the pause to apply")
    assert gateway.command("p1") == ("applied", None)
    paused = gateway.run(run_id)
    assert paused["status"] == "waiting" and paused["paused"] == 1
    # A paused run is not due: while another run starts and completes, its ledger does not grow.
    other = gateway.start("bench-loop", {"n": 20})
    gateway.wait_status(other, "completed")
    assert gateway.run(run_id)["ledger_len"] == paused["ledger_len"]
    assert gateway.db.query_one("SELECT due_at, lease_owner FROM runs WHERE run_id = ?", (run_id,)) == (
        None,
        None,
    )

    _cmd(gateway, "r1", run_id, "resume")
    done = gateway.wait_status(run_id, "completed")
    assert gateway.command("r1") == ("applied", None)
    assert done["ledger_len"] > paused["ledger_len"]


def test_cancel_reaches_the_run_and_its_children(gateway: Gateway) -> None:
    parent = gateway.start("bench-tick", {"n": 1000, "delay": 0.01})
    child = gateway.start("bench-tick", {"n": 1000, "delay": 0.01}, parent_run_id=parent)
    gateway.runner()
    gateway.wait(lambda: gateway.run(child)["ledger_len"] > 2, "the child to run")
    _cmd(gateway, "c1", parent, "cancel", reason="enough")
    assert gateway.wait_status(parent, "cancelled")["error"] == "enough"
    assert gateway.wait_status(child, "cancelled")["status"] == "cancelled"
    assert gateway.command("c1") == ("applied", None)
    assert gateway.command(f"c1>{child}") == ("applied", None)
    # A finished run refuses further state changes, with the reason.
    _cmd(gateway, "c2", parent, "cancel")
    _cmd(gateway, "r2", parent, "resume", payload={"response": "late"})
    gateway.wait(lambda: gateway.command("r2")[0] != "pending", "the late commands to resolve")
    assert gateway.command("c2") == ("rejected", "run already cancelled")
    assert gateway.command("r2")[0] == "rejected" and "not waiting" in str(gateway.command("r2")[1])


def test_resume_with_payload_answers_a_wait_once(gateway: Gateway) -> None:
    run_id = gateway.start("bench-ask")
    gateway.runner()
    gateway.wait_status(run_id, "waiting")
    _cmd(gateway, "a1", run_id, "resume", payload={"response": "yes"})
    assert not append_command(
        gateway.db, command_id="a1", run_id=run_id, type="resume", payload={"payload": {"response": "no"}}
    ).accepted
    gateway.wait_status(run_id, "completed")
    assert gateway.command("a1") == ("applied", None)
    resumes = [
        r for _, r in gateway.ledger(run_id) if "yes" in str(r.get("result")) or "no" in str(r.get("result"))
    ]
    assert resumes and all("'no'" not in str(r) for r in resumes)


def test_emit_event_resumes_exactly_the_runs_waiting_on_it(gateway: Gateway) -> None:
    same = [gateway.start("demo-wait", {"x": i}, session_id="s1") for i in (1, 2)]
    other = gateway.start("demo-wait", {"x": 3}, session_id="s2")
    still_asking = gateway.start("demo-wait", {"x": 4}, session_id="s1")
    gateway.runner()
    for i, run_id in enumerate([*same, other]):
        gateway.wait_status(run_id, "waiting")
        _cmd(gateway, f"ask-{i}", run_id, "resume", payload={"response": "ok"})
    for run_id in (*same, other):
        gateway.wait(lambda run_id=run_id: gateway.run(run_id)["wait_reason"] == "event", "the event wait")
    gateway.wait_status(still_asking, "waiting")

    # run_id names the session here, as the contract allows for emit_event.
    _cmd(gateway, "e1", "s1", "emit_event", name="demo:approval", payload={"n": 1})
    for run_id in same:
        assert gateway.wait_status(run_id, "completed")["output"]["event"]["payload"] == {"n": 1}
    assert gateway.command("e1") == ("applied", None)
    deliveries = gateway.db.query("SELECT run_id FROM commands WHERE command_id LIKE 'e1>%' ORDER BY run_id")
    assert [row[0] for row in deliveries] == sorted(same)
    assert gateway.run(other)["wait_reason"] == "event" and gateway.run(other)["status"] == "waiting"
    assert gateway.run(still_asking)["wait_reason"] == "user"

    _cmd(gateway, "e2", other, "emit_event", name="x", scope="galaxy")
    gateway.wait(lambda: gateway.command("e2")[0] != "pending", "the bad event to resolve")
    assert gateway.command("e2")[0] == "rejected" and "$.payload.scope" in str(gateway.command("e2")[1])


def test_update_schedule_and_compact_memory_get_outcomes(gateway: Gateway) -> None:
    run_id = gateway.start("bench-ask")
    gateway.runner()
    gateway.wait_status(run_id, "waiting")
    _cmd(gateway, "u1", run_id, "update_schedule", interval="1h")
    _cmd(gateway, "m1", run_id, "compact_memory", preserve_recent=2)
    gateway.wait(lambda: gateway.command("m1")[0] != "pending", "the commands to resolve")
    status, error = gateway.command("u1")
    assert status == "rejected" and "not a scheduled run" in str(error)
    assert gateway.command("m1") == ("applied", None)
    assert gateway.run(run_id)["status"] == "waiting"
