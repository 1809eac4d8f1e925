"""Bundles a hostile (or an ordinary) client uploads: start -> one node -> end, built at test time."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

EXEC_IN = {"id": "exec-in", "label": "", "type": "execution"}
EXEC_OUT = {"id": "exec-out", "label": "", "type": "execution"}


def _pin(pin_id: str) -> dict[str, str]:
    return {"id": pin_id, "label": pin_id, "type": "any"}


def chain_bundle(
    bundle_id: str,
    steps: list[tuple[str, dict[str, Any], list[str]]],
    *,
    functions: list[dict[str, str]] | None = None,
    result_from: tuple[str, str] | None = None,
) -> bytes:
    """start -> steps[0] -> ... -> end. Each step is (node type, data, output pin ids); the end node's
    `result` is wired from `result_from` (node id, pin), default the last step's first output pin.
    Node ids are n0, n1, ... in order."""
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "on_flow_start",
         "data": {"nodeType": "on_flow_start", "inputs": [], "outputs": [EXEC_OUT, _pin("message")]}},
    ]  # fmt: skip
    edges: list[dict[str, Any]] = []
    previous = "start"
    for index, (kind, data, outputs) in enumerate(steps):
        node_id = f"n{index}"
        inputs = [EXEC_IN, *[_pin(p) for p in data.pop("_inputs", [])]]
        nodes.append(
            {"id": node_id, "type": kind,
             "data": {"nodeType": kind, "inputs": inputs, "outputs": [EXEC_OUT, *[_pin(p) for p in outputs]], **data}}
        )  # fmt: skip
        edges.append({"id": f"x{index}", "source": previous, "sourceHandle": "exec-out",
                      "target": node_id, "targetHandle": "exec-in"})  # fmt: skip
        previous = node_id
    nodes.append(
        {"id": "end", "type": "on_flow_end",
         "data": {"nodeType": "on_flow_end", "inputs": [EXEC_IN, _pin("result")], "outputs": []}}
    )  # fmt: skip
    edges.append(
        {
            "id": "xe",
            "source": previous,
            "sourceHandle": "exec-out",
            "target": "end",
            "targetHandle": "exec-in",
        }
    )
    if result_from is None and steps:
        result_from = (f"n{len(steps) - 1}", steps[-1][2][0])
    if result_from is not None:
        edges.append({"id": "r", "source": result_from[0], "sourceHandle": result_from[1],
                      "target": "end", "targetHandle": "result"})  # fmt: skip
    flow: dict[str, Any] = {
        "id": "main",
        "name": bundle_id,
        "entryNode": "start",
        "nodes": nodes,
        "edges": edges,
    }
    if functions:
        flow["functions"] = functions
    manifest = {
        "bundle_format_version": "1",
        "bundle_id": bundle_id,
        "bundle_version": "1.0.0",
        "entrypoints": [{"flow_id": "main", "name": bundle_id, "description": "", "interfaces": []}],
        "default_entrypoint": "main",
        "flows": {"main": "flows/main.json"},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("manifest.json", json.dumps(manifest))
        bundle.writestr("flows/main.json", json.dumps(flow))
    return buffer.getvalue()


def code_bundle(bundle_id: str, code: str) -> bytes:
    """start -> a code node running `code` (defining transform(_input)) -> end(result = its output)."""
    return chain_bundle(bundle_id, [("code", {"code": code, "functionName": "transform"}, ["output"])])
