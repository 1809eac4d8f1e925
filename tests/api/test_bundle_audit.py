"""Bundles are immutable per id@version unless an admin overwrites; uploads, overwrites and deletes
are audited with the old and new sha256; a flows-dir file shadowed by an upload shows in health.

Replays the exploit: a token holder replaced bench-echo@1.0.0 (the operator's flows-dir file) with a
trojan that ran for the next user, and the audit log recorded neither the overwrite nor the hash."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx

from .conftest import Gateway, make_gateway
from .test_bundles import bundle_bytes


def audit_lines(gw: Gateway) -> list[dict]:
    path = Path(gw.settings.audit_log)  # type: ignore[arg-type]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def audit_entry(gw: Gateway, method: str, **match: object) -> dict:
    """The last line for `method` (and `match`): the middleware writes it just after the response."""
    deadline = time.monotonic() + 60  # the line follows the response; a loaded machine delays it
    while time.monotonic() < deadline:
        entries = [
            e
            for e in audit_lines(gw)
            if e["method"] == method and all(e.get(k) == v for k, v in match.items())
        ]
        if entries:
            return entries[-1]
        time.sleep(0.01)
    raise AssertionError(f"no {method} in the audit log")


def upload(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return client.post(
        "/api/gateway/bundles/upload", files={"file": ("b.flow", data, "application/zip")}, data=fields
    )


def test_only_an_admin_overwrites_and_every_change_is_audited(tmp_path: Path, flows: Path) -> None:
    original = (flows / "bench-echo@1.0.0.flow").read_bytes()
    original_sha = hashlib.sha256(original).hexdigest()
    trojan = bundle_bytes(flows, version="1.0.0", extra={"notes.txt": b"replaced"})
    trojan_sha = hashlib.sha256(trojan).hexdigest()
    with make_gateway(tmp_path, flows, flows_dir=flows) as gw:
        audit_file = Path(gw.settings.audit_log)  # type: ignore[arg-type]
        gw.client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"})  # creates the log
        audit_entry(gw, "POST", path="/api/gateway/runs/start")
        assert audit_file.stat().st_mode & 0o777 == 0o600
        minted = gw.client.post("/api/gateway/tokens", json={"scopes": ["read", "run"]}).json()["token"]
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {minted}"}) as user:
            refused = upload(user, trojan, overwrite="true")
            assert refused.status_code == 403 and "'admin' scope" in refused.json()["detail"]
            assert user.delete("/api/gateway/bundles/bench-echo").status_code == 403
            # The legitimate use beside it: the same token still starts the operator's bundle.
            assert user.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).status_code == 200
        assert gw.client.get("/api/gateway/bundles/bench-echo").json()["sha256"] == original_sha
        # Without overwrite even an admin cannot change an id@version.
        assert upload(gw.client, trojan).status_code == 409
        assert gw.client.get("/api/health").json()["shadowed_flow_files"] == []

        replaced = upload(gw.client, trojan, overwrite="true")
        assert replaced.status_code == 200 and replaced.json()["sha256"] == trojan_sha
        entry = audit_entry(gw, "POST", path="/api/gateway/bundles/upload", status=200)
        assert entry["ids"]["action"] == "overwrite"
        assert entry["ids"]["old_sha256"] == original_sha and entry["ids"]["new_sha256"] == trojan_sha
        assert entry["ids"]["bundle_ref"] == "bench-echo@1.0.0"
        # Refused attempts are on record too: the non-admin's (403), the admin's without overwrite (409).
        audit_entry(gw, "POST", path="/api/gateway/bundles/upload", status=409)
        uploads = [e for e in audit_lines(gw) if e["path"] == "/api/gateway/bundles/upload"]
        assert [e["status"] for e in uploads] == [403, 409, 200]
        assert uploads[1]["ids"]["new_sha256"] == trojan_sha

        shadowed = gw.client.get("/api/health").json()["shadowed_flow_files"]
        assert len(shadowed) == 1 and shadowed[0].startswith("bench-echo@1.0.0.flow")
        assert trojan_sha[:12] in shadowed[0] and original_sha[:12] in shadowed[0]
        with httpx.Client(base_url=gw.url) as anon:
            assert "shadowed_flow_files" not in anon.get("/api/health").json()

        removed = gw.client.delete("/api/gateway/bundles/bench-echo", params={"bundle_version": "1.0.0"})
        assert removed.status_code == 200
        entry = audit_entry(gw, "DELETE")
        assert entry["ids"]["action"] == "delete"
        assert entry["ids"]["old_sha256"] == {"1.0.0": trojan_sha}


def test_an_audit_log_on_a_device_keeps_the_devices_mode(tmp_path: Path) -> None:
    """AUDIT_LOG=/dev/null (auditing off) or a shipper's pipe: written to, never narrowed to 0600 (as
    root that once left the machine's /dev/null unreadable to every other user). A character device of
    /dev/null's own numbers, made here, stands in for it; a regular file is still narrowed."""
    import os
    import stat

    import pytest

    from api_service.middleware.audit import AuditLog

    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (CI runs as root)")
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(device, 0o666)  # past the umask
    log = AuditLog(device)
    log.write({"method": "POST", "path": "/api/gateway/runs/start"})
    log.close()
    assert stat.S_IMODE(device.stat().st_mode) == 0o666
    plain = tmp_path / "audit.jsonl"
    plain.write_text("")
    plain.chmod(0o644)
    AuditLog(plain).close()
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
