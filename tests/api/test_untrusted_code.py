"""The issue's exploits through the API, over a real Hypercorn and a real runner process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared_store.bundles import import_flows_dir
from tests.hostile_flows import chain_bundle, code_bundle

from .conftest import TERMINAL, TOKEN, Gateway, make_gateway, start_runner, stop_process


def _upload(gateway: Gateway, data: bytes) -> object:
    return gateway.client.post(
        "/api/gateway/bundles/upload", files={"file": ("b.flow", data, "application/zip")}
    )


@pytest.fixture
def served(tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    # The runner inherits this environment: the token must still not reach what its code returns.
    monkeypatch.setenv("ABSTRACTGATEWAY_AUTH_TOKEN", TOKEN)
    with make_gateway(tmp_path, flows) as gateway:
        runner = start_runner(gateway.db_path, flows)
        try:
            yield gateway
        finally:
            stop_process(runner)


def test_hostile_code_node_is_refused_and_benign_code_computes(served: Gateway) -> None:
    hostile = "import shlex\ndef transform(_input):\n    os = shlex.os\n    os.system('id')\n    return dict(os.environ)"
    assert _upload(served, code_bundle("trojan", hostile)).status_code == 200
    assert (
        _upload(served, code_bundle("adder", "def transform(_input):\n    return 40 + 2")).status_code == 200
    )
    trojan, adder = served.start("trojan"), served.start("adder")
    bad = served.wait_for(trojan, lambda v: v["status"] in TERMINAL)
    good = served.wait_for(adder, lambda v: v["status"] in TERMINAL)
    assert good["status"] == "completed" and good["output"]["result"] == 42, good
    assert bad["output"]["success"] is False and "module 'os'" in bad["output"]["error"], bad
    ledger = served.client.get(f"/api/gateway/runs/{trojan}/ledger").text
    assert TOKEN not in ledger and TOKEN not in str(bad)


def test_file_nodes_cannot_read_the_environment_or_export_host_files(served: Gateway) -> None:
    steal = chain_bundle("steal", [
        ("read_file", {"pinDefaults": {"file_path": "/proc/self/environ"}, "_inputs": ["file_path"]}, ["content"]),
    ])  # fmt: skip
    export = chain_bundle("export", [
        ("import_workspace_file", {"pinDefaults": {"file_path": "/etc/os-release"}, "_inputs": ["file_path"]},
         ["artifact"]),
    ])  # fmt: skip
    notes = chain_bundle("notes", [
        ("write_file", {"pinDefaults": {"file_path": "a.txt", "content": "kept"}, "_inputs": ["file_path", "content"]},
         ["file_path"]),
        ("read_file", {"pinDefaults": {"file_path": "a.txt"}, "_inputs": ["file_path"]}, ["content"]),
    ])  # fmt: skip
    for data in (steal, export, notes):
        assert _upload(served, data).status_code == 200
    runs = [served.start(name, {"workspace_root": "/"}) for name in ("steal", "export", "notes")]
    views = [served.wait_for(run_id, lambda v: v["status"] in TERMINAL) for run_id in runs]
    for view in views[:2]:
        assert view["output"]["success"] is False and "workspace" in view["output"]["error"], view
        assert TOKEN not in str(view)
    assert views[2]["output"]["result"] == "kept"
    artifacts = served.client.get(f"/api/gateway/runs/{runs[1]}/artifacts")
    assert "os-release" not in artifacts.text


def test_code_nodes_off_refuses_the_upload_with_the_reason(
    tmp_path: Path, flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_gateway(tmp_path, flows) as gateway:
        monkeypatch.setenv("ABSTRACTGATEWAY_CODE_NODES", "off")
        # A flows-dir bundle with code is reported, not imported anew (demo-wait has a code node).
        problems = import_flows_dir(gateway.db, flows)
        assert any("demo-wait" in p and "ABSTRACTGATEWAY_CODE_NODES=off" in p for p in problems), problems
        before = gateway.counts()
        response = _upload(gateway, code_bundle("coded", "def transform(_input):\n    return 1"))
        assert response.status_code == 422, response.text
        assert "ABSTRACTGATEWAY_CODE_NODES=off" in response.text and "code node 'n0'" in response.text
        assert gateway.counts() == before
        plain = chain_bundle("plain", [
            ("write_file", {"pinDefaults": {"file_path": "a.txt", "content": "x"}, "_inputs": ["file_path", "content"]},
             ["file_path"]),
        ])  # fmt: skip
        assert _upload(gateway, plain).status_code == 200
