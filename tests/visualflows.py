"""Small VisualFlow documents the tests write as `*.json` files into a flows dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXEC_OUT = {"id": "exec-out", "label": "", "type": "execution"}
EXEC_IN = {"id": "exec-in", "label": "", "type": "execution"}


def _start(*names: str) -> dict[str, Any]:
    outputs = [EXEC_OUT, *({"id": n, "label": n, "type": "any"} for n in names)]
    return {"id": "start", "type": "on_flow_start", "data": {"nodeType": "on_flow_start", "inputs": [], "outputs": outputs}}  # fmt: skip


def _end(*names: str) -> dict[str, Any]:
    inputs = [EXEC_IN, *({"id": n, "label": n, "type": "any"} for n in names)]
    return {"id": "end", "type": "on_flow_end", "data": {"nodeType": "on_flow_end", "inputs": inputs, "outputs": []}}  # fmt: skip


def _edge(source: str, source_handle: str, target: str, target_handle: str) -> dict[str, str]:
    return {"source": source, "sourceHandle": source_handle, "target": target, "targetHandle": target_handle}


def echo_flow(flow_id: str = "echo_json") -> dict[str, Any]:
    """start(message) -> end(result = message)."""
    return {
        "id": flow_id,
        "name": flow_id,
        "description": "echoes message",
        "nodes": [_start("message"), _end("result")],
        "edges": [_edge("start", "exec-out", "end", "exec-in"), _edge("start", "message", "end", "result")],
        "entryNode": "start",
    }


def llm_flow(flow_id: str = "ask_llm", pins: dict[str, str] | None = None) -> dict[str, Any]:
    """start(prompt) -> llm_call (no provider / model pinned unless `pins`) -> end(response)."""
    llm_data: dict[str, Any] = {
        "nodeType": "llm_call",
        "inputs": [EXEC_IN] + [{"id": n, "label": n, "type": t} for n, t in
                   (("provider", "provider"), ("model", "model"), ("system", "string"), ("prompt", "string"))],
        "outputs": [EXEC_OUT, {"id": "response", "label": "response", "type": "string"},
                    {"id": "success", "label": "success", "type": "boolean"}],
    }  # fmt: skip
    if pins:
        llm_data["pinDefaults"] = dict(pins)
    return {
        "id": flow_id,
        "name": flow_id,
        "description": "one llm_call",
        "nodes": [_start("prompt"), {"id": "llm", "type": "llm_call", "data": llm_data}, _end("response")],
        "edges": [
            _edge("start", "exec-out", "llm", "exec-in"),
            _edge("llm", "exec-out", "end", "exec-in"),
            _edge("start", "prompt", "llm", "prompt"),
            _edge("llm", "response", "end", "response"),
        ],
        "entryNode": "start",
    }


def caller_flow(flow_id: str, subflow_id: str) -> dict[str, Any]:
    """start -> subflow(subflow_id) -> end: the called flow is found by its id."""
    sub = {"nodeType": "subflow", "subflowId": subflow_id, "inputs": [EXEC_IN],
           "outputs": [EXEC_OUT, {"id": "result", "label": "result", "type": "any"}]}  # fmt: skip
    return {
        "id": flow_id,
        "name": flow_id,
        "nodes": [_start(), {"id": "sub", "type": "subflow", "data": sub}, _end("result")],
        "edges": [
            _edge("start", "exec-out", "sub", "exec-in"),
            _edge("sub", "exec-out", "end", "exec-in"),
            _edge("sub", "result", "end", "result"),
        ],
        "entryNode": "start",
    }


def write(folder: Path, name: str, document: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path
