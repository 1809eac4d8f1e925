"""The JSON scan behind ABSTRACTGATEWAY_CODE_NODES=off finds every kind of statement-level code."""

from __future__ import annotations

import pytest

from shared_store.bundle_code import code_locations, code_refusal
from shared_store.bundle_files import BundleHasCode, read_manifest
from tests.hostile_flows import chain_bundle, code_bundle


def test_scan_finds_code_nodes_function_nodes_and_flow_functions() -> None:
    document = {
        "functions": [{"name": "f", "code": "def f(x):\n    return x"}],
        "nodes": [
            {"id": "a", "type": "code", "data": {"code": "def transform(_input):\n    return 1"}},
            {"id": "b", "type": "function", "data": {"code": "def transform(x):\n    return x"}},
            {"id": "c", "type": "function", "data": {"expression": "x + 1"}},
            {"id": "d", "data": {"nodeType": "code"}},
            "junk",
        ],
    }
    assert code_locations("main", document) == [
        "flow main: 1 flow function(s)",
        "flow main: code node 'a'",
        "flow main: function node 'b'",
        "flow main: code node 'd'",
    ]


def test_refusal_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    coded = code_bundle("coded", "def transform(_input):\n    return 1")
    plain = chain_bundle("plain", [])
    monkeypatch.delenv("ABSTRACTGATEWAY_CODE_NODES", raising=False)
    assert read_manifest(coded)["bundle_id"] == "coded"
    monkeypatch.setenv("ABSTRACTGATEWAY_CODE_NODES", "off")
    with pytest.raises(BundleHasCode, match="code node 'n0'") as refused:
        read_manifest(coded)
    assert refused.value.kind == "invalid"  # a 422 by api_service.errors.STATUS_OF_KIND
    assert read_manifest(plain)["bundle_id"] == "plain"
    assert code_refusal({"main": {"nodes": []}}) is None
    monkeypatch.setenv("ABSTRACTGATEWAY_CODE_NODES", "maybe")
    with pytest.raises(ValueError, match="sandbox, off"):
        read_manifest(plain)
