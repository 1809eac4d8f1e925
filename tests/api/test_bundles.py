"""Bundles over HTTP: upload (validated, compile-checked), versions, deprecation, removal, input schema."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared_store.bundle_files import zip_opens

from .conftest import Gateway


def bundle_bytes(
    flows: Path,
    *,
    version: str = "2.0.0",
    edit_flow: Callable[[dict[str, Any]], None] | None = None,
    extra: dict[str, bytes] | None = None,
    drop_manifest: bool = False,
) -> bytes:
    """bench-echo rewritten as another version (optionally with its flow edited or files added)."""
    source = zipfile.ZipFile(flows / "bench-echo@1.0.0.flow")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "manifest.json":
                if drop_manifest:
                    continue
                manifest = json.loads(data)
                manifest["bundle_version"] = version
                data = json.dumps(manifest).encode()
            elif edit_flow is not None and info.filename.startswith("flows/"):
                document = json.loads(data)
                edit_flow(document)
                data = json.dumps(document).encode()
            zf.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out.getvalue()


def upload(gw: Gateway, data: bytes, **fields: str) -> Any:
    return gw.client.post(
        "/api/gateway/bundles/upload", files={"file": ("b.flow", data, "application/zip")}, data=fields
    )


def _unknown_node(document: dict[str, Any]) -> None:
    document["nodes"][0]["type"] = "no_such_node_type"
    document["nodes"][0]["data"]["nodeType"] = "no_such_node_type"


def test_upload_lists_versions_and_refuses_a_duplicate(lone_gateway: Gateway, flows: Path) -> None:
    gw = lone_gateway
    data = bundle_bytes(flows, version="2.0.0")
    response = upload(gw, data)
    assert response.status_code == 200, response.text
    item = response.json()
    assert item["bundle_ref"] == "bench-echo@2.0.0" and item["default_entrypoint"] == "echo"
    assert [e["flow_id"] for e in item["entrypoints"]] == ["echo"]

    listed = {i["bundle_id"]: i for i in gw.client.get("/api/gateway/bundles").json()["items"]}
    assert listed["bench-echo"]["bundle_version"] == "2.0.0", "newest version by default"
    versions = gw.client.get("/api/gateway/bundles", params={"all_versions": "true"}).json()["items"]
    assert {i["bundle_version"] for i in versions if i["bundle_id"] == "bench-echo"} == {"1.0.0", "2.0.0"}
    older = gw.client.get("/api/gateway/bundles/bench-echo", params={"bundle_version": "1.0.0"}).json()
    assert older["bundle_ref"] == "bench-echo@1.0.0"
    assert gw.client.get("/api/gateway/bundles/bench-echo@1.0.0").json()["bundle_version"] == "1.0.0"

    before = gw.counts()
    again = upload(gw, data)
    assert again.status_code == 409 and "overwrite" in again.json()["detail"]
    assert gw.counts() == before
    replaced = upload(gw, data, overwrite="true")
    assert replaced.status_code == 200 and gw.counts() == before

    started = gw.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).json()
    assert started["resolved_workflow"] == {
        "workflow_id": "bench-echo@2.0.0:echo",
        "bundle_id": "bench-echo",
        "bundle_version": "2.0.0",
        "flow_id": "echo",
        "name": "bench-echo",
        "source": "client",
    }
    pinned = gw.client.post("/api/gateway/runs/start", json={"flow_id": "bench-echo@1.0.0:echo"}).json()
    assert pinned["resolved_workflow"]["bundle_version"] == "1.0.0"


def _opened_since(before: dict[str, int]) -> dict[str, int]:
    return {name: n - before.get(name, 0) for name, n in zip_opens().items() if n != before.get(name, 0)}


@pytest.mark.parametrize("overwrite", ["false", "true"])
def test_an_upload_opens_its_zip_once_off_the_event_loop_and_the_writer(
    lone_gateway: Gateway, flows: Path, overwrite: str
) -> None:
    """The API parses and hashes an upload once, in a worker thread; the writer's transaction stores
    that (it used to parse the zip on the event loop and twice more inside the transaction). The
    compile check's child process parses its own copy: it is not this process's count."""
    data = bundle_bytes(flows, version=f"8.0.{overwrite == 'true':d}")
    if overwrite == "true":
        assert upload(lone_gateway, data).status_code == 200
    before = zip_opens()
    response = upload(lone_gateway, data, overwrite=overwrite)
    assert response.status_code == 200, response.text
    opened = _opened_since(before)
    assert sum(opened.values()) == 1, opened
    assert not set(opened) & {"hypercorn", "api-writer"}, opened  # the event loop's and the writer's


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda flows: b"this is not a zip", ()),
        (lambda flows: bundle_bytes(flows, version="2.1.0", extra={"../escape.json": b"{}"}), ("escape",)),
        (lambda flows: bundle_bytes(flows, version="2.2.0", drop_manifest=True), ("manifest",)),
        (
            lambda flows: bundle_bytes(flows, version="2.3.0", edit_flow=_unknown_node),
            ("compile", "no_such_node"),
        ),
    ],
    ids=["not-a-zip", "zip-slip", "no-manifest", "does-not-compile"],
)
def test_bad_bundles_are_400_and_nothing_is_stored(
    lone_gateway: Gateway, flows: Path, make: Callable[[Path], bytes], words: tuple[str, ...]
) -> None:
    before = lone_gateway.counts()
    response = upload(lone_gateway, make(flows))
    assert response.status_code == 400, response.text
    for word in words:
        assert word in response.json()["detail"]
    assert lone_gateway.counts() == before


def test_upload_needs_a_file_field(lone_gateway: Gateway) -> None:
    before = lone_gateway.counts()
    response = lone_gateway.client.post("/api/gateway/bundles/upload", data={"overwrite": "true"})
    assert response.status_code == 422 and "file" in response.json()["detail"]
    response = lone_gateway.client.post("/api/gateway/bundles/upload", json={"file": "x"})
    assert response.status_code == 422
    assert lone_gateway.counts() == before


def test_deprecation_refuses_new_starts_with_the_reason(lone_gateway: Gateway) -> None:
    gw = lone_gateway
    deprecated = gw.client.post(
        "/api/gateway/bundles/bench-loop/deprecate", json={"flow_id": "loop", "reason": "use bench-tick"}
    )
    assert deprecated.status_code == 200 and deprecated.json()["deprecated"] is True
    before = gw.counts()
    refused = gw.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-loop"})
    assert refused.status_code == 409 and "use bench-tick" in refused.json()["detail"]
    assert gw.counts() == before
    listed = gw.client.get("/api/gateway/bundles/bench-loop").json()
    assert listed["entrypoints"][0]["deprecated"] is True

    gw.client.post("/api/gateway/bundles/bench-tick/deprecate", json={"reason": "retired"})
    names = {i["bundle_id"] for i in gw.client.get("/api/gateway/bundles").json()["items"]}
    assert "bench-tick" not in names, "a deprecated bundle is hidden by default"
    shown = gw.client.get("/api/gateway/bundles", params={"include_deprecated": "true"}).json()["items"]
    assert next(i for i in shown if i["bundle_id"] == "bench-tick")["deprecated"] is True

    for bundle_id, flow in (("bench-loop", "loop"), ("bench-tick", None)):
        back = gw.client.post(f"/api/gateway/bundles/{bundle_id}/undeprecate", json={"flow_id": flow})
        assert back.status_code == 200 and back.json()["deprecated"] is False
        ok = gw.client.post("/api/gateway/runs/start", json={"bundle_id": bundle_id, "input_data": {"n": 1}})
        assert ok.status_code == 200


def test_delete_a_version(lone_gateway: Gateway, flows: Path) -> None:
    gw = lone_gateway
    assert upload(gw, bundle_bytes(flows, version="5.0.0")).status_code == 200
    removed = gw.client.delete("/api/gateway/bundles/bench-echo", params={"bundle_version": "5.0.0"})
    assert removed.json() == {"removed": 1}
    assert gw.client.get("/api/gateway/bundles/bench-echo@5.0.0").status_code == 404
    refused = gw.client.post("/api/gateway/runs/start", json={"flow_id": "bench-echo@5.0.0:echo"})
    assert refused.status_code == 404
    again = gw.client.delete("/api/gateway/bundles/bench-echo", params={"bundle_version": "5.0.0"})
    assert again.status_code == 404


def test_input_schema(lone_gateway: Gateway) -> None:
    schema = lone_gateway.client.get("/api/gateway/bundles/bench-tick/flows/tick/input_schema").json()
    assert schema["flow_id"] == "tick" and schema["bundle_id"] == "bench-tick"
    assert {pin["id"] for pin in schema["inputs"]} >= {"n", "delay"}
