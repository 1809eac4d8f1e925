"""Plain VisualFlow `*.json` files in the flows dir, served as one-flow `.flow` bundles.

Each file becomes a bundle named by the flow's own `id` (else the file name), version 0.0.0, whose
entrypoint is that flow: its workflow id is `<id>@0.0.0:<id>`, the same on every import. The flows it
calls as subflows (found in the same directory by id) travel inside its bundle, so a subflow's bare id
resolves as it does in any bundle. The zip is written with fixed timestamps: the same files give the
same bytes (and sha256), so a re-import of unchanged files changes nothing.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import msgspec

from .bundle_files import _NAME, BundleInvalid

VERSION = "0.0.0"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SUBFLOW_KEYS = ("subflowId", "flowId", "workflowId", "workflow_id")  # as the VisualFlow compiler reads


def _flow_id(document: dict[str, Any], path: Path) -> str:
    raw = document.get("id")
    if isinstance(raw, str) and _NAME.match(raw):
        return raw
    cleaned = re.sub(r"[^A-Za-z0-9._+\-]", "-", path.stem).strip("-._+") or "flow"
    return cleaned[:128]


def read_visualflow(path: Path) -> dict[str, Any]:
    """A VisualFlow document (a JSON object with `nodes`); raises BundleInvalid with the reason."""
    try:
        document = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BundleInvalid(f"not a readable VisualFlow JSON file: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise BundleInvalid("not a VisualFlow: a JSON object with a `nodes` list is expected")
    return document


def _subflow_ids(document: dict[str, Any]) -> list[str]:
    found = []
    for node in document.get("nodes") or []:
        data = node.get("data") if isinstance(node, dict) else None
        if not isinstance(data, dict):
            continue
        ref = next((data[k] for k in _SUBFLOW_KEYS if isinstance(data.get(k), str) and data[k].strip()), None)
        if ref:
            found.append(ref.strip())
    return found


def visualflow_bundles(files: list[Path]) -> tuple[list[tuple[Path, bytes]], list[str]]:
    """([(file, .flow bytes)], problems) for VisualFlow files; a file that cannot be read is a problem."""
    documents: dict[str, tuple[Path, dict[str, Any]]] = {}
    problems: list[str] = []
    for path in files:
        try:
            document = read_visualflow(path)
        except BundleInvalid as exc:
            problems.append(f"{path.name}: {exc.detail}")
            continue
        flow_id = _flow_id(document, path)
        if flow_id in documents:
            problems.append(
                f"{path.name}: flow id {flow_id!r} is also {documents[flow_id][0].name}'s; skipped"
            )
            continue
        documents[flow_id] = (path, document)
    bundles = []
    for flow_id, (path, document) in documents.items():
        closure: dict[str, dict[str, Any]] = {}
        queue = [flow_id]
        while queue:
            current = queue.pop(0)
            if current in closure or current not in documents:
                continue  # an unknown subflow id: the compile check reports it
            closure[current] = documents[current][1]
            queue.extend(_subflow_ids(closure[current]))
        bundles.append((path, _zip(flow_id, document, closure, path.name)))
    return bundles, problems


def _zip(flow_id: str, document: dict[str, Any], flows: dict[str, dict[str, Any]], file_name: str) -> bytes:
    manifest = {
        "bundle_format_version": "1",
        "bundle_id": flow_id,
        "bundle_version": VERSION,
        "entrypoints": [
            {
                "flow_id": flow_id,
                "name": str(document.get("name") or flow_id),
                "description": str(document.get("description") or ""),
                "interfaces": document.get("interfaces") or [],
            }
        ],
        "default_entrypoint": flow_id,
        "flows": {fid: f"flows/{fid}.json" for fid in flows},
        "metadata": {"format": "visualflow", "source_file": file_name},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        entries = [("manifest.json", manifest)] + [(f"flows/{fid}.json", doc) for fid, doc in flows.items()]
        for name, value in entries:
            bundle.writestr(zipfile.ZipInfo(name, _EPOCH), msgspec.json.encode(value, order="sorted"))
    return buffer.getvalue()
