"""A parent waiting on a child is resumed when the child finishes, wherever the child was ticked."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from shared_store.bundles import put_bundle
from shared_store.inbox import append_command
from tests.runner.conftest import Gateway


def _nested_bundle(flows: Path) -> bytes:
    """Bundle 'nested': main = start -> subflow(ask) -> end; ask = the bench-ask flow."""
    with zipfile.ZipFile(flows / "bench-ask@1.0.0.flow") as source:
        ask = json.loads(source.read("flows/ask.json"))
    exec_pins = [{"id": "exec-in", "label": "", "type": "execution"}]
    main = {
        "id": "main",
        "name": "nested main",
        "entryNode": "start",
        "nodes": [
            {"id": "start", "type": "on_flow_start", "data": {"nodeType": "on_flow_start", "inputs": [],
             "outputs": [{"id": "exec-out", "label": "", "type": "execution"}]}},
            {"id": "sub", "type": "subflow", "data": {"nodeType": "subflow", "subflowId": "ask", "inputs": exec_pins,
             "outputs": [{"id": "exec-out", "label": "", "type": "execution"},
                         {"id": "response", "label": "response", "type": "any"}]}},
            {"id": "end", "type": "on_flow_end", "data": {"nodeType": "on_flow_end",
             "inputs": [*exec_pins, {"id": "response", "label": "response", "type": "any"}], "outputs": []}},
        ],
        "edges": [
            {"id": "e1", "source": "start", "sourceHandle": "exec-out", "target": "sub", "targetHandle": "exec-in"},
            {"id": "e2", "source": "sub", "sourceHandle": "exec-out", "target": "end", "targetHandle": "exec-in"},
            {"id": "e3", "source": "sub", "sourceHandle": "response", "target": "end", "targetHandle": "response"},
        ],
    }  # fmt: skip
    manifest = {
        "bundle_format_version": "1",
        "bundle_id": "nested",
        "bundle_version": "1.0.0",
        "entrypoints": [{"flow_id": "main", "name": "nested", "description": "", "interfaces": []}],
        "default_entrypoint": "main",
        "flows": {"main": "flows/main.json", "ask": "flows/ask.json"},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("manifest.json", json.dumps(manifest))
        bundle.writestr("flows/main.json", json.dumps(main))
        bundle.writestr("flows/ask.json", json.dumps(ask))
    return buffer.getvalue()


def test_parent_resumes_when_its_waiting_child_is_answered(gateway: Gateway, flows: Path) -> None:
    put_bundle(gateway.db, _nested_bundle(flows))
    parent = gateway.start("nested")
    gateway.runner()
    waiting = gateway.wait_status(parent, "waiting")
    assert waiting["wait_reason"] == "subworkflow"
    child = waiting["wait_key"].removeprefix("subworkflow:")
    # The subflow runs as its own run (async + wait): ticked on a later claim, it reaches its ask.
    assert gateway.wait_status(child, "waiting")["wait_reason"] == "user"
    assert gateway.db.query_one("SELECT parent_run_id FROM runs WHERE run_id = ?", (child,)) == (parent,)

    append_command(
        gateway.db, command_id="answer", run_id=child, type="resume", payload={"payload": {"response": "42"}}
    )
    assert gateway.wait_status(child, "completed")["status"] == "completed"
    done = gateway.wait_status(parent, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert "42" in json.dumps(done["output"])


def test_cancelling_the_parent_cancels_the_waiting_child(gateway: Gateway, flows: Path) -> None:
    put_bundle(gateway.db, _nested_bundle(flows))
    parent = gateway.start("nested")
    gateway.runner()
    child = gateway.wait_status(parent, "waiting")["wait_key"].removeprefix("subworkflow:")
    append_command(gateway.db, command_id="stop", run_id=parent, type="cancel", payload={})
    assert gateway.wait_status(parent, "cancelled")["status"] == "cancelled"
    assert gateway.wait_status(child, "cancelled")["status"] == "cancelled"
