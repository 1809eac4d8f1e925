"""Hostile inputs, one by one: zip-slip and zip-bomb bundles, deeply nested JSON, invalid UTF-8, header
injection through the SSE resume cursor, oversized headers.

Every case gets the documented 4xx (a JSON `{"detail": ...}`) or, where the HTTP layer refuses the
bytes before the app sees them, a 4xx from Hypercorn or a closed connection; nothing is written (row
counts unchanged) and the server answers normally afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import stat
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared_store.bundle_files import MAX_ENTRIES, MAX_ENTRY_BYTES, MAX_TOTAL_BYTES

from ..api.conftest import TOKEN, Gateway, read_sse

MIB = 1024 * 1024
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
JSON_ROUTES = [
    "/api/gateway/runs/start",
    "/api/gateway/runs/schedule",
    "/api/gateway/commands",
    "/api/gateway/runs/ledger/batch",
    "/api/gateway/bundles/bench-echo/deprecate",
    "/api/gateway/bundles/bench-echo/undeprecate",
]


@pytest.fixture
def gw(fuzz_gateway: Gateway) -> Iterator[Gateway]:
    """The module's runner-less gateway: each test must leave the row counts as they were and the
    server answering."""
    before = fuzz_gateway.counts()
    yield fuzz_gateway
    assert fuzz_gateway.counts() == before, "a refused request wrote something"
    assert_healthy(fuzz_gateway)


def assert_healthy(gw: Gateway) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as fresh:  # a new connection
        assert fresh.get("/api/health").status_code == 200
        listing = fresh.get("/api/gateway/bundles", headers={"Authorization": f"Bearer {TOKEN}"})
        assert listing.status_code == 200 and listing.json()["items"]


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    detail = str(response.json()["detail"])
    for word in words:
        assert word in detail, (word, detail)
    return detail


def raw_request(gw: Gateway, head: bytes, body: bytes = b"", *, timeout: float = 10) -> int | None:
    """Send bytes as they are (what httpx would refuse to send); the status answered, or None when
    the server closed the connection without an answer."""
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # Refused while we were still sending: what was answered is read below.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + b"Connection: close\r\n\r\n" + body)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
    return int(match.group(1)) if match else None


# --- bundles: zip slip, zip bombs ---------------------------------------------------------------------
def bundle(flows: Path, *, edit: Callable[[dict[str, bytes]], None] | None = None) -> bytes:
    """bench-echo as a .flow zip, its members (name -> bytes) edited first."""
    with zipfile.ZipFile(flows / "bench-echo@1.0.0.flow") as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    manifest = json.loads(members["manifest.json"])
    manifest["bundle_version"] = "6.6.6"
    members["manifest.json"] = json.dumps(manifest).encode()
    if edit is not None:
        edit(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in members.items():
            target.writestr(name, data)
    return out.getvalue()


def upload(gw: Gateway, data: bytes, **fields: str) -> httpx.Response:
    files = {"file": ("hostile.flow", data, "application/zip")}
    return gw.client.post("/api/gateway/bundles/upload", files=files, data=fields)


def flow_path(members: dict[str, bytes]) -> str:
    return next(iter(json.loads(members["manifest.json"])["flows"].values()))


def _add(name: str) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        members[name] = b"{}"

    return edit


def _point_manifest_at(path: str) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        manifest["flows"] = {flow_id: path for flow_id in manifest["flows"]}
        members["manifest.json"] = json.dumps(manifest).encode()
        members[path] = b"{}"

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _add("../escape.json"),
        _add("flows/../../escape.json"),
        _add("/tmp/escape.json"),
        _add("..\\escape.json"),
        _add("C:/escape.json"),
        _point_manifest_at("../escape.json"),
        _point_manifest_at("/etc/escape.json"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "backslash",
        "drive",
        "manifest-dotdot",
        "manifest-abs",
    ],
)
def test_zip_slip_is_refused(gw: Gateway, flows: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    refused(upload(gw, bundle(flows, edit=edit)), 400, "unsafe path")
    root = gw.db_path.parent
    assert not list(root.parent.rglob("escape.json")), "a bundle member was written outside"


def test_symlink_members_are_read_as_data_never_followed(gw: Gateway, flows: Path) -> None:
    """A member flagged as a symlink to a real file: its bytes are the link text, never the target."""
    with zipfile.ZipFile(flows / "bench-echo@1.0.0.flow") as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name, data in members.items():
            if name == flow_path(members):
                link = zipfile.ZipInfo(name)
                link.external_attr = (stat.S_IFLNK | 0o777) << 16
                target.writestr(link, str(gw.db_path))  # the db itself: a JSON parse of it must fail
            else:
                target.writestr(name, data.replace(b'"1.0.0"', b'"6.6.7"'))
    refused(upload(gw, out.getvalue()), 400, "not valid JSON")


def _streamed_member(name: str, size: int, fill: bytes = b" ") -> bytes:
    """A zip holding `name`, `size` bytes of `fill` deflated (written in chunks: never all in memory)."""
    out = io.BytesIO()
    chunk = fill * MIB
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open(name, "w", force_zip64=True) as handle,
    ):
        for _ in range(size // MIB):
            handle.write(chunk)
    return out.getvalue()


BOMB_BYTES = 256 * MIB  # 8x the per-file cap, about 1000:1


@pytest.fixture(scope="module")
def bomb_member() -> bytes:
    data = _streamed_member("bomb", BOMB_BYTES)
    assert len(data) < BOMB_BYTES // 500, "not a high-ratio bomb"
    return data


def _with_raw_member(flows: Path, name: str, member_zip: bytes) -> bytes:
    """bench-echo with member `name` replaced by the (already compressed) only member of member_zip."""
    with zipfile.ZipFile(flows / "bench-echo@1.0.0.flow") as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for member, data in members.items():
            if member != name:
                target.writestr(member, data.replace(b'"1.0.0"', b'"6.6.8"'))
    # Copy the compressed entry across without inflating it: append the bomb's local file record
    # and central directory entry through zipfile's raw writer.
    with zipfile.ZipFile(io.BytesIO(member_zip)) as bomb, zipfile.ZipFile(out, "a") as target:
        info = bomb.infolist()[0]
        raw = bomb.fp
        assert raw is not None
        raw.seek(info.header_offset)
        header = raw.read(30)
        name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
        raw.seek(info.header_offset + 30 + name_len + extra_len)
        compressed = raw.read(info.compress_size)
        copy = zipfile.ZipInfo(name, date_time=info.date_time)
        copy.compress_type, copy.CRC = zipfile.ZIP_DEFLATED, info.CRC
        copy.file_size, copy.compress_size = info.file_size, len(compressed)
        copy.header_offset = target.fp.tell()  # type: ignore[union-attr]
        target.fp.write(copy.FileHeader(zip64=True))  # type: ignore[union-attr]
        target.fp.write(compressed)  # type: ignore[union-attr]
        target.start_dir = target.fp.tell()  # type: ignore[union-attr]
        target.filelist.append(copy)
        target.NameToInfo[name] = copy
        target._didModify = True
    return out.getvalue()


def _peak_during(action: Callable[[], httpx.Response]) -> tuple[httpx.Response, int]:
    """The response, and the peak of Python memory allocated meanwhile (the server runs in this
    process: its allocations are traced too)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = action()
        return response, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("target", ["flow", "manifest.json"])
def test_zip_bomb_is_refused_without_inflating_it(
    gw: Gateway, flows: Path, bomb_member: bytes, target: str
) -> None:
    with zipfile.ZipFile(flows / "bench-echo@1.0.0.flow") as source:
        members = {info.filename: b"" for info in source.infolist()}
        members["manifest.json"] = source.read("manifest.json")
    name = flow_path(members) if target == "flow" else "manifest.json"
    data = _with_raw_member(flows, name, bomb_member)
    with zipfile.ZipFile(io.BytesIO(data)) as check:
        assert check.getinfo(name).file_size == BOMB_BYTES and len(data) < 2 * MIB
    response, peak = _peak_during(lambda: upload(gw, data))
    refused(response, 400, "over", str(MAX_ENTRY_BYTES))
    assert peak < MAX_ENTRY_BYTES * 3, (
        f"{peak / MIB:.0f} MiB allocated to refuse a {BOMB_BYTES // MIB} MiB bomb"
    )


def test_many_members_under_the_per_file_cap_are_refused_at_the_total_cap(gw: Gateway, flows: Path) -> None:
    """Valid JSON flows of 30 MiB each, more of them than the total cap allows: refused at the cap."""
    per_flow = 30 * MIB
    flow = b'{"x": "' + b"a" * (per_flow - 10) + b'"}'
    count = MAX_TOTAL_BYTES // per_flow + 1

    def edit(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        for n in range(count):
            manifest["flows"][f"big{n}"] = f"flows/big{n}.json"
            manifest["entrypoints"].append({"flow_id": f"big{n}"})
            members[f"flows/big{n}.json"] = flow
        members["manifest.json"] = json.dumps(manifest).encode()

    data = bundle(flows, edit=edit)
    assert len(data) < 2 * MIB
    response, peak = _peak_during(lambda: upload(gw, data))
    refused(response, 400, "over", str(MAX_TOTAL_BYTES))
    # Bounded by the caps (what was read before the total ran over, plus its parsed documents).
    assert peak < 3 * MAX_TOTAL_BYTES, f"{peak / MIB:.0f} MiB"


def test_too_many_members_are_refused(gw: Gateway, flows: Path) -> None:
    def edit(members: dict[str, bytes]) -> None:
        members.update({f"junk/{n}": b"" for n in range(MAX_ENTRIES + 1)})

    refused(upload(gw, bundle(flows, edit=edit)), 400, str(MAX_ENTRIES))


# --- deeply nested JSON -------------------------------------------------------------------------------
DEPTH = 100_000


def nested_arrays(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int = DEPTH) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("make", [nested_arrays, nested_objects], ids=["arrays", "objects"])
def test_deeply_nested_json_bodies_are_4xx(gw: Gateway, route: str, make: Callable[[], bytes]) -> None:
    """422 either way: nested too deeply for the decoder, or a shape that is wrong first."""
    response = gw.client.post(route, content=make(), headers={"content-type": "application/json"})
    assert response.status_code == 422, (response.status_code, response.text[:300])


@pytest.mark.parametrize(
    ("route", "prefix", "suffix"),
    [
        ("/api/gateway/runs/start", b'{"bundle_id": "bench-echo", "input_data": {"x": ', b"}}"),
        (
            "/api/gateway/commands",
            b'{"command_id": "c-deep", "run_id": "r", "type": "resume", "payload": {"x": ',
            b"}}",
        ),
        ("/api/gateway/runs/schedule", b'{"bundle_id": "bench-echo", "input_data": {"x": ', b"}}"),
    ],
    ids=["start-input", "command-payload", "schedule-input"],
)
def test_deep_nesting_inside_free_form_fields_is_422(
    gw: Gateway, route: str, prefix: bytes, suffix: bytes
) -> None:
    body = prefix + nested_arrays() + suffix
    response = gw.client.post(route, content=body, headers={"content-type": "application/json"})
    refused(response, 422, "nested")


def test_deeply_nested_bundle_manifest_is_400(gw: Gateway, flows: Path) -> None:
    def edit(members: dict[str, bytes]) -> None:
        members["manifest.json"] = nested_objects()

    refused(upload(gw, bundle(flows, edit=edit)), 400, "manifest.json", "nested")


def test_deeply_nested_flow_document_is_400(gw: Gateway, flows: Path) -> None:
    def edit(members: dict[str, bytes]) -> None:
        members[flow_path(members)] = nested_arrays()

    refused(upload(gw, bundle(flows, edit=edit)), 400, "nested")


def test_nesting_that_is_accepted_reads_back(fuzz_gateway: Gateway) -> None:
    """The deepest input a start accepts is stored and reads back through every route that shows it."""
    gw = fuzz_gateway
    value: Any = "leaf"
    for _ in range(200):
        value = [value]
    run_id = gw.start("bench-echo", {"x": value})
    shown = gw.client.get(f"/api/gateway/runs/{run_id}/input_data")
    assert shown.status_code == 200 and shown.json()["input_data"] == {"x": value}
    assert gw.client.get(f"/api/gateway/runs/{run_id}/history_bundle").status_code == 200
    assert gw.client.get("/api/gateway/runs").status_code == 200


# --- invalid UTF-8 ------------------------------------------------------------------------------------
# Each route with a string field it reads (msgspec skips unknown fields without validating them).
UTF8_BODIES = {
    "/api/gateway/runs/start": b'{"bundle_id": "@@", "input_data": {"k@@": "v@@"}}',
    "/api/gateway/runs/schedule": b'{"bundle_id": "@@", "interval": "1h"}',
    "/api/gateway/commands": b'{"command_id": "@@", "run_id": "r", "type": "pause"}',
    "/api/gateway/runs/ledger/batch": b'{"runs": [{"run_id": "@@"}]}',
    "/api/gateway/bundles/bench-echo/deprecate": b'{"reason": "@@"}',
    "/api/gateway/bundles/bench-echo/undeprecate": b'{"flow_id": "@@"}',
}


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize(
    "bad",
    [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\\ud800"],
    ids=["ff-fe", "bad-continuation", "encoded-surrogate", "overlong", "above-max", "escaped-lone-surrogate"],
)
def test_invalid_utf8_json_bodies_are_422(gw: Gateway, route: str, bad: bytes) -> None:
    body = UTF8_BODIES[route].replace(b"@@", bad)
    response = gw.client.post(route, content=body, headers={"content-type": "application/json"})
    refused(response, 422, "malformed JSON")


def test_invalid_utf8_in_bundle_files_is_400(gw: Gateway, flows: Path) -> None:
    def edit(members: dict[str, bytes]) -> None:
        members["manifest.json"] = members["manifest.json"].replace(b'"6.6.6"', b'"6.6.\xff"')

    refused(upload(gw, bundle(flows, edit=edit)), 400, "manifest.json")


@pytest.mark.parametrize("value", ["%FF%FE", "%ED%A0%80", "%C0%AF", "%00"])
def test_invalid_utf8_in_query_strings(gw: Gateway, value: str) -> None:
    for path, status in (
        (f"/api/gateway/runs?status={value}", 400),
        (f"/api/gateway/runs?workflow_id={value}", 200),
        (f"/api/gateway/runs?limit={value}", 422),
        (f"/api/gateway/bundles/bench-echo?bundle_version={value}", 404),
        (f"/api/gateway/runs/x/ledger?after={value}", 422),
        (f"/api/gateway/runs/x/ledger/stream?last_event_id={value}", 400),
        (f"/api/gateway/runs?{value}=1", 400),
    ):
        response = gw.client.get(httpx.URL(gw.url + path))
        assert response.status_code == status, (path, response.status_code, response.text)
        assert "detail" in response.json() or status == 200


@pytest.mark.parametrize("value", ["%FF%FE", "%ED%A0%80", "%C0%AF", "%00", "%E2%80%AE"])
def test_invalid_utf8_in_path_params_is_404(gw: Gateway, value: str) -> None:
    for path in (
        f"/api/gateway/runs/{value}",
        f"/api/gateway/runs/{value}/ledger",
        f"/api/gateway/runs/{value}/ledger/stream",
        f"/api/gateway/runs/{value}/history_bundle",
        f"/api/gateway/runs/x/artifacts/{value}/content",
        f"/api/gateway/commands/{value}",
        f"/api/gateway/bundles/{value}",
        f"/api/gateway/bundles/bench-echo/flows/{value}/input_schema",
    ):
        response = gw.client.get(httpx.URL(gw.url + path))
        refused(response, 404)
    refused(gw.client.delete(httpx.URL(f"{gw.url}/api/gateway/bundles/{value}")), 404)
    command = {"command_id": "c-utf8", "run_id": "\ufffd\x00", "type": "pause"}
    refused(gw.client.post("/api/gateway/commands", json=command), 404)


@pytest.mark.parametrize(
    "target",
    [b"/api/gateway/runs?status=\xff\xfe", b"/api/gateway/runs/\xff\xfe", b"/api/gateway/bundles/\xc0\xaf"],
)
def test_raw_non_ascii_request_targets_are_refused(gw: Gateway, target: bytes) -> None:
    """Bytes that are not even percent-encoded: refused by the HTTP layer or answered 4xx."""
    status = raw_request(gw, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + AUTH)
    assert status is None or 400 <= status < 500, status


def test_invalid_utf8_in_multipart_fields_is_422(gw: Gateway, flows: Path) -> None:
    files = {"file": ("\xff.flow", bundle(flows), "application/zip")}
    response = gw.client.post(
        "/api/gateway/bundles/upload", files=files, data={"overwrite": b"\xff\xfe".decode("latin-1")}
    )
    refused(response, 422, "overwrite")


# --- SSE: the resume cursor ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(sample_runs: dict[str, str], fuzz_gateway: Gateway) -> tuple[str, int]:
    run_id = sample_runs["done"]
    return run_id, fuzz_gateway.run(run_id)["ledger_len"]


ID_LINE = re.compile(r"^[0-9]+$")


def stream_events(gw: Gateway, run_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    with gw.client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream", **kwargs) as response:
        assert response.status_code == 200, response.read()
        return read_sse(response)


@pytest.mark.parametrize(
    "value",
    [
        "-1",
        "+1",
        "1.5",
        "1e3",
        "0x10",
        "abc",
        "1 id: 666",
        "9" * 19,
        "9" * 4000,
        "1;2",
        "\u0661",  # Arabic-Indic digit one (UTF-8 bytes on the wire)
        "\uff11",  # fullwidth one
    ],
)
def test_bad_last_event_id_headers_are_400(gw: Gateway, finished: tuple[str, int], value: str) -> None:
    run_id, _ = finished
    headers = {"Last-Event-ID": value.encode()}
    refused(gw.client.get(f"/api/gateway/runs/{run_id}/ledger/stream", headers=headers), 400, "Last-Event-ID")


@pytest.mark.parametrize("value", ["1\r\nid: 666", "1\nid: 666", "1\rid: 666", "-1", "9" * 100, "1\x00"])
def test_bad_last_event_id_queries_are_400(gw: Gateway, finished: tuple[str, int], value: str) -> None:
    run_id, _ = finished
    response = gw.client.get(f"/api/gateway/runs/{run_id}/ledger/stream", params={"last_event_id": value})
    refused(response, 400, "Last-Event-ID")


@pytest.mark.parametrize(
    "header",
    [
        b"Last-Event-ID: 1\rid: 666\r\n",  # a bare CR inside the value
        b"Last-Event-ID: 1\r\n id: 666\r\n",  # obs-fold: a continuation line
        b"Last-Event-ID: 1\r\n\tevent: done\r\n",
        b"Last-Event-ID: 1\x00id: 666\r\n",
        b"Last-Event-ID: 1\nid: 666\r\n",  # a bare LF: at most a second header named `id`
    ],
    ids=["bare-cr", "obs-fold", "obs-fold-tab", "nul", "bare-lf"],
)
def test_header_injection_in_last_event_id_never_reaches_the_stream(
    gw: Gateway, finished: tuple[str, int], header: bytes
) -> None:
    run_id, ledger_len = finished
    port = int(gw.url.rsplit(":", 1)[1])
    head = f"GET /api/gateway/runs/{run_id}/ledger/stream HTTP/1.1\r\nHost: x\r\n".encode() + AUTH + header
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
    if status is None or int(status.group(1)) != 200:
        assert status is None or 400 <= int(status.group(1)) < 500, received[:300]
        return
    # Accepted (the injected part became another header): the stream carries only our own ids.
    _, _, body = received.partition(b"\r\n\r\n")
    # Not `b"666" not in body`: records carry random ids and timestamps that may contain it by chance.
    assert not re.search(rb"^id: 666", body, re.M)
    ids = [line[4:] for line in body.decode().splitlines() if line.startswith("id: ")]
    assert ids and all(ID_LINE.match(i) and int(i) <= ledger_len for i in ids), ids


def test_stream_ids_are_only_ever_cursors(gw: Gateway, finished: tuple[str, int]) -> None:
    run_id, ledger_len = finished
    for kwargs in (
        {},
        {"headers": {"Last-Event-ID": "1"}},
        {"headers": {"Last-Event-ID": "2"}},
        {"params": {"last_event_id": "0", "after": "3"}},
        {"headers": {"Last-Event-ID": "9" * 18}},  # past the end: `done` names the real cursor
        {"params": {"after": "9" * 18}},
    ):
        events = stream_events(gw, run_id, **kwargs)
        assert events[-1]["event"] == "done", events
        ids = [e["id"] for e in events if "id" in e]
        assert all(ID_LINE.match(i) and int(i) <= ledger_len for i in ids), (kwargs, ids)
        assert json.loads(events[-1]["data"])["cursor"] == ledger_len


@pytest.mark.parametrize("value", ["9" * 19, "9" * 40, "-1", "1e400", "nan"])
def test_huge_and_negative_cursors_in_queries_are_4xx(
    gw: Gateway, finished: tuple[str, int], value: str
) -> None:
    run_id, _ = finished
    for path in (f"/api/gateway/runs/{run_id}/ledger", f"/api/gateway/runs/{run_id}/ledger/stream"):
        response = gw.client.get(path, params={"after": value})
        assert response.status_code in (400, 422), (path, value, response.status_code, response.text)
    for params in ({"offset": value}, {"limit": value}):
        response = gw.client.get("/api/gateway/runs", params=params)
        assert response.status_code in (400, 422), (params, response.status_code, response.text)
    body = {"runs": [{"run_id": run_id, "after": int(value) if value.lstrip("-").isdigit() else value}]}
    response = gw.client.post("/api/gateway/runs/ledger/batch", json=body)
    assert response.status_code in (400, 422), (value, response.status_code, response.text)


# --- oversized headers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        b"X-Big: " + b"a" * (100 * 1024) + b"\r\n",
        b"".join(b"X-Many-%d: v\r\n" % n for n in range(5_000)),
        b"Last-Event-ID: " + b"9" * (64 * 1024) + b"\r\n",
        b"Authorization: Bearer " + b"t" * (64 * 1024) + b"\r\n",
    ],
    ids=["one-100k-header", "5000-headers", "64k-last-event-id", "64k-token"],
)
def test_oversized_headers_are_refused(gw: Gateway, extra: bytes) -> None:
    status = raw_request(gw, b"GET /api/gateway/runs HTTP/1.1\r\nHost: x\r\n" + AUTH + extra)
    assert status is None or 400 <= status < 500, status


def test_oversized_request_line_is_refused(gw: Gateway) -> None:
    status = raw_request(
        gw, b"GET /api/gateway/runs/" + b"r" * (100 * 1024) + b" HTTP/1.1\r\nHost: x\r\n" + AUTH
    )
    assert status is None or 400 <= status < 500, status


def test_large_headers_under_the_limit_get_the_documented_answer(
    gw: Gateway, finished: tuple[str, int]
) -> None:
    run_id, _ = finished
    long_token = {"Authorization": "Bearer " + "t" * 8_000}
    response = httpx.get(f"{gw.url}/api/gateway/runs", headers=long_token, timeout=10)
    refused(response, 401, "invalid bearer token")
    refused(
        gw.client.post(
            "/api/gateway/runs/start",
            json={"bundle_id": "bench-echo"},
            headers={"Idempotency-Key": "k" * 8_000},
        ),
        400,
        "Idempotency-Key",
    )
    response = gw.client.get(
        f"/api/gateway/runs/{run_id}/ledger/stream", headers={"Last-Event-ID": "9" * 8_000}
    )
    refused(response, 400, "Last-Event-ID")


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (
            "/api/gateway/runs/schedule",
            {"bundle_id": "bench-echo", "interval": "1h", "repeat_count": 10**30},
            "repeat_count",
        ),
        (
            "/api/gateway/commands",
            {
                "command_id": "c-big",
                "run_id": "r",
                "type": "update_schedule",
                "payload": {"repeat_count": 10**30},
            },
            "$.payload.repeat_count",
        ),
        ("/api/gateway/runs/ledger/batch", {"runs": [{"run_id": "r", "after": 2**63}]}, "$.runs[0].after"),
    ],
    ids=["schedule-repeat-count", "update-schedule-repeat-count", "batch-after"],
)
def test_integers_past_sqlite_range_are_422(
    gw: Gateway, route: str, body: dict[str, Any], field: str
) -> None:
    refused(gw.client.post(route, json=body), 422, field)
