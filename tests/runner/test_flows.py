"""Every sample flow reaches its expected end under a real runner process."""

from __future__ import annotations

import io
import json
import zipfile

from shared_store.bundles import compile_failures, put_bundle
from shared_store.inbox import append_command
from tests.runner.conftest import Gateway
from tests.runner.fake_openai import running_fake_openai


def test_each_sample_flow_reaches_its_end(gateway: Gateway) -> None:
    runs = {
        "echo": gateway.start("bench-echo", {"message": "hello"}),
        "loop": gateway.start("bench-loop", {"n": 5}),
        "tick": gateway.start("bench-tick", {"n": 3, "delay": 0.05}),
        "chain": gateway.start("chain-200", {"counter": 0}),
        "effects": gateway.start("chain-effects-200"),
        "ask": gateway.start("bench-ask"),
        "wait": gateway.start("demo-wait", {"x": 4}),
        "llm": gateway.start("demo-llm", {"prompt": "hi"}),
    }
    runner = gateway.runner()

    echo = gateway.wait_status(runs["echo"], "completed")
    assert echo["output"]["result"] == "hello"
    assert gateway.wait_status(runs["loop"], "completed")["ledger_len"] == 2 * 5 + 2
    assert gateway.wait_status(runs["tick"], "completed")["output"]["success"] is True
    assert gateway.wait_status(runs["chain"], "completed")["output"]["success"] is True
    assert gateway.wait_status(runs["effects"], "completed")["ledger_len"] == 402
    # No provider configured: the llm_call fails the run with the reason.
    llm = gateway.wait_status(runs["llm"], "failed")
    assert "ABSTRACTGATEWAY_PROVIDER" in llm["error"]

    ask = gateway.wait_status(runs["ask"], "waiting")
    assert ask["wait_reason"] == "user"
    append_command(
        gateway.db,
        command_id="ask-1",
        run_id=runs["ask"],
        type="resume",
        payload={"payload": {"response": "go"}},
    )
    assert gateway.wait_status(runs["ask"], "completed")["output"]["success"] is True

    gateway.wait_status(runs["wait"], "waiting")
    append_command(
        gateway.db,
        command_id="wait-1",
        run_id=runs["wait"],
        type="resume",
        payload={"payload": {"response": "yes"}},
    )
    gateway.wait(
        lambda: gateway.run(runs["wait"])["wait_reason"] == "event", "demo-wait to wait on its event"
    )
    append_command(
        gateway.db, command_id="wait-2", run_id=runs["wait"], type="emit_event",
        payload={"name": "demo:approval", "payload": {"approved": True}},
    )  # fmt: skip
    wait = gateway.wait_status(runs["wait"], "completed")
    assert wait["output"]["doubled"] == 8 and wait["output"]["answer"] == "yes"
    assert wait["output"]["event"]["payload"] == {"approved": True}
    assert [gateway.command(c)[0] for c in ("ask-1", "wait-1", "wait-2")] == ["applied"] * 3

    assert runner.stop() == 0
    started = [e["run_id"] for e in runner.events() if e["event"] == "run_started"]
    assert sorted(started) == sorted(runs.values()), "every run started exactly once"


def test_demo_llm_answers_through_the_configured_provider(gateway: Gateway) -> None:
    with running_fake_openai() as fake:
        run_id = gateway.start("demo-llm", {"prompt": "ping"})
        gateway.runner(
            ABSTRACTGATEWAY_PROVIDER="openai-compatible",
            ABSTRACTGATEWAY_MODEL="fake-echo-1",
            ABSTRACTGATEWAY_BASE_URL=fake.base_url,
        )
        run = gateway.wait_status(run_id, "completed", "failed")
        assert run["status"] == "completed", run["error"]
        assert "fake answer" in str(run["output"])
        assert len(fake.requests) >= 1


def test_a_run_of_a_removed_bundle_fails_with_the_reason(gateway: Gateway) -> None:
    """A queued run whose workflow cannot be compiled is failed, with the reason, not retried forever."""
    run_id = gateway.start("bench-echo", {"message": "x"})
    gateway.db.execute_write("DELETE FROM bundles WHERE bundle_id = 'bench-echo'")
    gateway.runner()
    run = gateway.wait_status(run_id, "failed")
    assert "Bundle 'bench-echo@1.0.0' not found" in run["error"]
    assert gateway.ledger(run_id)[-1][1]["status"] == "failed"


def test_a_bundle_that_does_not_compile_is_reported_not_fatal(gateway: Gateway) -> None:
    manifest = {
        "bundle_format_version": "1",
        "bundle_id": "broken",
        "bundle_version": "1.0.0",
        "entrypoints": [{"flow_id": "main"}],
        "flows": {"main": "flows/main.json"},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("manifest.json", json.dumps(manifest))
        bundle.writestr("flows/main.json", json.dumps({"nodes": [], "edges": []}))
    put_bundle(gateway.db, buffer.getvalue())
    broken = gateway.start("broken")
    echo = gateway.start("bench-echo", {"message": "still serving"})
    gateway.runner()
    assert gateway.wait_status(echo, "completed")["output"]["result"] == "still serving"
    failed = gateway.wait_status(broken, "failed")
    assert "does not compile" in failed["error"]
    failures = compile_failures(gateway.db)
    assert len(failures) == 1 and failures[0].startswith("bundle broken@1.0.0 does not compile")
