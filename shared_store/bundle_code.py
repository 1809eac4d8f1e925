"""Where a bundle carries code: a pure JSON scan of its VisualFlow documents (no abstractruntime).

`ABSTRACTGATEWAY_CODE_NODES=off` makes a gateway refuse such bundles at upload (the reason names
each place) and report, never run, a flows-dir file that has any. Statement-level code is what the
scan finds: `code` nodes, `function` nodes given a `code` body, and flow-level `functions`.
"""

from __future__ import annotations

from typing import Any

from .settings import SharedSettings, read_one

CODE_NODES_ENV = "ABSTRACTGATEWAY_CODE_NODES"
CODE_NODE_MODES = ("sandbox", "off")


def code_nodes_mode() -> str:
    """'sandbox' (the default: code runs in the runner's sandbox) or 'off' (no code at all)."""
    mode: str = read_one(SharedSettings, "code_nodes")  # SettingsError (a ValueError) when bad
    return mode


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _node_type(node: dict[str, Any]) -> str:
    data = _dict(node.get("data"))
    return str(node.get("type") or data.get("nodeType") or "")


def code_locations(flow_id: str, document: dict[str, Any]) -> list[str]:
    """'flow X: code node Y' for each place of one flow document that holds code."""
    found: list[str] = []
    functions = document.get("functions")
    if isinstance(functions, list) and functions:
        found.append(f"flow {flow_id}: {len(functions)} flow function(s)")
    nodes = document.get("nodes")
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        data = _dict(node.get("data"))
        kind = _node_type(node)
        if kind == "code" or (kind == "function" and "code" in data):
            found.append(f"flow {flow_id}: {kind} node {node.get('id')!r}")
    return found


def code_refusal(documents: dict[str, dict[str, Any]]) -> str | None:
    """The reason a bundle is refused under CODE_NODES=off, or None when it may be stored and run."""
    if code_nodes_mode() != "off":
        return None
    found = [where for flow_id, doc in documents.items() for where in code_locations(flow_id, doc)]
    if not found:
        return None
    shown = "; ".join(found[:10]) + (f"; and {len(found) - 10} more" if len(found) > 10 else "")
    return f"this gateway runs no code ({CODE_NODES_ENV}=off), and the bundle has code: {shown}"
