"""Starts reuse a workflow's resolution while its bundle is unchanged (api_service/flow_control.py),
and follow every change to the bundle at once: a new version, an overwrite, a deprecation, a removal,
made through the API or through another connection to the db (another API worker, the CLI)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from shared_store import bundles

from .conftest import Gateway
from .test_bundles import bundle_bytes, upload


def _renamed(data: bytes, name: str) -> bytes:
    """The same bundle with its entrypoint renamed (other bytes: another sha256)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "manifest.json":
                manifest = json.loads(content)
                manifest["entrypoints"][0]["name"] = name
                content = json.dumps(manifest).encode()
            zf.writestr(info.filename, content)
    return out.getvalue()


def _start(gw: Gateway, **body: Any) -> Any:
    return gw.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo", **body})


def test_a_cached_resolution_follows_every_change_to_its_bundle(lone_gateway: Gateway, flows: Path) -> None:
    gw = lone_gateway
    for _ in range(2):  # the second start is answered from the cache
        assert _start(gw).json()["resolved_workflow"]["bundle_version"] == "1.0.0"

    assert upload(gw, bundle_bytes(flows, version="3.0.0")).status_code == 200
    newest = _start(gw).json()["resolved_workflow"]
    assert newest["bundle_version"] == "3.0.0", "an upload of a newer version is what a start runs"

    renamed = _renamed(bundle_bytes(flows, version="3.0.0"), "renamed entry")
    assert upload(gw, renamed, overwrite="true").status_code == 200
    assert _start(gw).json()["resolved_workflow"]["name"] == "renamed entry", "an overwrite is seen"

    # Through another connection, as another API worker or `abstractgateway` commands would.
    before = gw.counts()
    bundles.deprecate(gw.db, "bench-echo", reason="moved to bench-echo2")
    refused = _start(gw)
    assert refused.status_code == 409 and "moved to bench-echo2" in refused.json()["detail"]
    assert gw.counts()["runs"] == before["runs"]
    bundles.undeprecate(gw.db, "bench-echo")
    assert _start(gw).status_code == 200

    bundles.delete_bundle(gw.db, "bench-echo", "3.0.0")
    assert _start(gw).json()["resolved_workflow"]["bundle_version"] == "1.0.0", "a removal is seen"
    gone = _start(gw, bundle_version="3.0.0")
    assert gone.status_code == 404


def test_a_deprecated_flow_of_a_cached_bundle_is_refused_and_others_are_not(
    lone_gateway: Gateway,
) -> None:
    gw = lone_gateway
    body = {"bundle_id": "bench-loop", "input_data": {"n": 1}}
    for _ in range(2):
        assert gw.client.post("/api/gateway/runs/start", json=body).status_code == 200
    bundles.deprecate(gw.db, "bench-loop", flow_id="loop", reason="use bench-tick")
    refused = gw.client.post("/api/gateway/runs/start", json=body)
    assert refused.status_code == 409 and "use bench-tick" in refused.json()["detail"]
    named = gw.client.post("/api/gateway/runs/start", json={**body, "flow_id": "bench-loop@1.0.0:loop"})
    assert named.status_code == 409, "the same flow named another way is refused too"
    bundles.undeprecate(gw.db, "bench-loop", flow_id="loop")
    assert gw.client.post("/api/gateway/runs/start", json=body).status_code == 200
