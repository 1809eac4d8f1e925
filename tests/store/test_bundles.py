"""The bundle catalogue: validation of hostile zips, versions, deprecation, resolution, queued starts."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from shared_store import bundles as b
from shared_store.starts import IdempotencyConflict, enqueue_run, start_request


def _zip(files: dict[str, bytes | str], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _bundle(version: str = "1.0.0", bundle_id: str = "demo", **manifest_extra: object) -> bytes:
    manifest = {
        "bundle_format_version": "1",
        "bundle_id": bundle_id,
        "bundle_version": version,
        "entrypoints": [{"flow_id": "a"}, {"flow_id": "b"}],
        "default_entrypoint": "a",
        "flows": {"a": "flows/a.json", "b": "flows/b.json"},
        **manifest_extra,
    }
    return _zip({"manifest.json": json.dumps(manifest), "flows/a.json": "{}", "flows/b.json": "{}"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a zip", "not a .flow bundle"),
        (_zip({"flows/a.json": "{}"}), "no manifest.json"),
        (_zip({"manifest.json": "{", "flows/a.json": "{}"}), "not valid JSON"),
        (_zip({"manifest.json": "{}", "../evil.json": "{}"}), "unsafe path"),
        (_zip({"manifest.json": "{}", "/etc/passwd": "x"}), "unsafe path"),
        (_bundle(bundle_id="a@b"), "bundle_id"),
        (_bundle(default_entrypoint="zz"), "default_entrypoint"),
        (_bundle(flows={"a": "flows/missing.json"}), "not in the bundle"),
        (_bundle(flows={"a": "../flows/a.json"}), "unsafe path"),
    ],
)
def test_bad_bundles_are_refused_with_the_reason_and_nothing_is_stored(db, data: bytes, reason: str) -> None:
    with pytest.raises(b.BundleInvalid, match=reason):
        b.put_bundle(db, data)
    assert db.query_one("SELECT count(*) FROM bundles") == (0,)


def test_a_zip_bomb_is_refused_before_it_is_inflated(db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared_store.bundle_files.MAX_ENTRY_BYTES", 1024 * 1024)
    bomb = _zip({"manifest.json": b" " * (8 * 1024 * 1024)}, compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 64 * 1024
    with pytest.raises(b.BundleInvalid, match="over 1048576 bytes uncompressed"):
        b.put_bundle(db, bomb)


def test_versions_sort_numerically_and_overwrite_needs_consent(db) -> None:
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        b.put_bundle(db, _bundle(version))
    assert b.get_bundle(db, "demo").bundle_version == "1.10.0"
    assert [i.bundle_version for i in b.list_bundles(db, all_versions=True)] == ["1.10.0", "1.9.0", "1.2.0"]
    with pytest.raises(b.BundleExists):
        b.put_bundle(db, _bundle("1.9.0"))
    assert b.put_bundle(db, _bundle("1.9.0"), overwrite=True).bundle_version == "1.9.0"


def test_removed_versions_are_hidden_but_still_compilable(db) -> None:
    b.put_bundle(db, _bundle("1.0.0"))
    b.put_bundle(db, _bundle("2.0.0"))
    assert b.delete_bundle(db, "demo", "2.0.0") == 1
    assert b.get_bundle(db, "demo").bundle_version == "1.0.0"
    with pytest.raises(b.UnknownBundle):
        b.bundle_content(db, "demo", "2.0.0")
    # Runners compile from the row, removed or not: started runs keep working.
    assert db.query_one("SELECT count(*) FROM bundles WHERE bundle_version = '2.0.0'") == (1,)
    assert b.delete_bundle(db, "demo") == 1 and b.list_bundles(db) == []


def test_flows_dir_import_is_idempotent_and_respects_removals(db, flows: Path) -> None:
    assert b.import_flows_dir(db, flows) == []
    count = db.query_one("SELECT count(*) FROM bundles")
    assert b.import_flows_dir(db, flows) == [] and db.query_one("SELECT count(*) FROM bundles") == count
    b.delete_bundle(db, "bench-echo")
    b.import_flows_dir(db, flows)
    assert "bench-echo" not in {i.bundle_id for i in b.list_bundles(db)}
    assert b.import_flows_dir(db, flows / "nope") == [f"{flows / 'nope'}: no such file or folder"]


def test_resolution_rules_of_the_contract(db) -> None:
    b.put_bundle(db, _bundle("1.0.0"))
    b.put_bundle(db, _bundle("2.0.0"))
    assert b.resolve_workflow(db, bundle_id="demo").workflow_id == "demo@2.0.0:a"
    assert b.resolve_workflow(db, bundle_id="demo@1.0.0", flow_id="b").workflow_id == "demo@1.0.0:b"
    assert b.resolve_workflow(db, bundle_id="demo", bundle_version="1.0.0").workflow_id == "demo@1.0.0:a"
    assert b.resolve_workflow(db, flow_id="demo:b").workflow_id == "demo@2.0.0:b"
    assert b.resolve_workflow(db, flow_id="demo@1.0.0:b").workflow_id == "demo@1.0.0:b"
    with pytest.raises(b.BundleConflict):
        b.resolve_workflow(db, bundle_id="demo@1.0.0", bundle_version="2.0.0")
    with pytest.raises(b.UnknownBundle, match="Bundle 'x' not found"):
        b.resolve_workflow(db, bundle_id="x")
    with pytest.raises(b.UnknownFlow, match="entrypoints: a, b"):
        b.resolve_workflow(db, bundle_id="demo", flow_id="zz")
    with pytest.raises(b.BundleInvalid):
        b.resolve_workflow(db, flow_id="a")


def test_deprecation_refuses_new_starts_until_undeprecated(db) -> None:
    b.put_bundle(db, _bundle())
    b.deprecate(db, "demo", flow_id="b", reason="use a")
    assert b.resolve_workflow(db, bundle_id="demo").flow_id == "a"
    with pytest.raises(b.FlowDeprecated, match="use a"):
        b.resolve_workflow(db, bundle_id="demo", flow_id="b")
    b.deprecate(db, "demo", reason="retired")
    assert b.list_bundles(db) == [] and b.list_bundles(db, include_deprecated=True)[0].deprecated
    with pytest.raises(b.FlowDeprecated, match="retired"):
        b.resolve_workflow(db, bundle_id="demo")
    assert b.undeprecate(db, "demo") and b.undeprecate(db, "demo", flow_id="b")
    assert b.resolve_workflow(db, bundle_id="demo", flow_id="b").flow_id == "b"
    with pytest.raises(b.UnknownFlow):
        b.deprecate(db, "demo", flow_id="zz")


def test_queued_start_is_durable_and_idempotent_by_key(db) -> None:
    b.put_bundle(db, _bundle())
    resolved = b.resolve_workflow(db, bundle_id="demo")
    first = enqueue_run(db, resolved=resolved, input_data={"x": 1}, session_id="s", idempotency_key="k1")
    again = enqueue_run(db, resolved=resolved, input_data={"x": 1}, session_id="s", idempotency_key="k1")
    assert first.created and not again.created and again.run_id == first.run_id
    with pytest.raises(IdempotencyConflict):
        enqueue_run(db, resolved=resolved, input_data={"x": 2}, session_id="s", idempotency_key="k1")
    assert db.query("SELECT status, session_id, lease_owner FROM runs") == [("queued", "s", None)]
    assert start_request(db, first.run_id)["input_data"] == {"x": 1}
    assert db.query_one("SELECT count(*) FROM runs WHERE lease_owner IS NULL AND due_at IS NOT NULL") == (1,)


def test_bundle_ref_reads_the_manifest_alone() -> None:
    """Health lists the flows dir every few seconds and needs each file's id@version only: the flows
    are not read (a flow that is not even JSON does not stop it), the manifest's names are checked."""
    from shared_store.bundle_files import bundle_ref, read_bundle

    assert bundle_ref(_bundle("2.1.0", "demo")) == ("demo", "2.1.0")
    broken_flow = _zip(
        {
            "manifest.json": json.dumps(
                {"bundle_id": "x", "flows": {"a": "flows/a.json"}, "entrypoints": [{"flow_id": "a"}]}
            ),
            "flows/a.json": "{not json",
        },
        compression=zipfile.ZIP_DEFLATED,
    )
    assert bundle_ref(broken_flow) == ("x", "0.0.0")
    with pytest.raises(b.BundleInvalid, match=r"flow 'a' .* not valid JSON"):
        read_bundle(broken_flow)  # what an upload or the flows-dir import reads: the whole bundle
    for data, reason in [
        (b"not a zip", "not a .flow bundle"),
        (_zip({"flows/a.json": "{}"}), "no manifest.json"),
        (_zip({"manifest.json": "[1]"}), "must be a JSON object"),
        (_bundle(bundle_id="a@b"), "bundle_id"),
        (_zip({"manifest.json": "{}", "../evil.json": "{}"}), "unsafe path"),
    ]:
        with pytest.raises(b.BundleInvalid, match=reason):
            bundle_ref(data)
