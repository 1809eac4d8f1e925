"""Reading a `.flow` bundle (zip: manifest.json + VisualFlow JSON files) safely, without abstractruntime.

Everything a client uploads passes through `parse_bundle` before anything is stored: a bad zip,
a path escaping the bundle, a zip bomb, a missing manifest or flow file is refused with the reason.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import BadValue

MAX_ENTRIES = 2_000
MAX_ENTRY_BYTES = 32 * 1024 * 1024
MAX_TOTAL_BYTES = 128 * 1024 * 1024
# An id or version becomes part of `bundle@version:flow`: the separators may not appear in it.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}$")


class BundleError(BadValue):
    """A bundle problem with a reason a client can act on (`detail`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BundleInvalid(BundleError):
    pass


class BundleHasCode(BundleError):
    """A bundle with code nodes on a gateway configured to run none (ABSTRACTGATEWAY_CODE_NODES=off)."""

    kind = "invalid"


def _safe_member(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    return ":" not in parts[0] and not any(part in (".", "..") for part in parts)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    # Read at most the cap plus one byte: declared sizes in a hostile zip are not trusted.
    with zf.open(info) as handle:
        data = handle.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise BundleInvalid(f"bundle file {info.filename!r} is over {MAX_ENTRY_BYTES} bytes uncompressed")
    return data


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec: bad UTF-8 is UnicodeDecodeError
        raise BundleInvalid(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BundleInvalid(f"{what} is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise BundleInvalid(f"{what} must be a JSON object")
    return value


def _check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise BundleInvalid(
            f"manifest {field} {value!r} must be 1-128 characters of letters, digits, '.', '_', '+', '-'"
        )
    return value


# Zips this process has opened, by thread name. Parsing a bundle inflates and decodes every flow (up
# to 128 MiB): tests/api/test_bundles.py reads this to check that an upload opens its zip once, on
# neither the event loop's thread nor the writer's.
_zip_opens: Counter[str] = Counter()
_zip_opens_lock = threading.Lock()


def zip_opens() -> dict[str, int]:
    """How many bundle zips this process has opened so far, by the name of the thread that did."""
    with _zip_opens_lock:
        return dict(_zip_opens)


def _open_zip(data: bytes) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The bundle's zip and its members by name (each a safe path; manifest.json among them)."""
    with _zip_opens_lock:
        _zip_opens[threading.current_thread().name] += 1
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise BundleInvalid(f"not a .flow bundle (zip): {exc}") from None
    try:
        return zf, _members(zf)
    except BundleInvalid:
        zf.close()
        raise


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BundleInvalid(f"bundle has {len(infos)} files; at most {MAX_ENTRIES}")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if not _safe_member(info.filename):
            raise BundleInvalid(f"unsafe path in bundle: {info.filename!r}")
        members[info.filename] = info
    if "manifest.json" not in members:
        raise BundleInvalid("bundle has no manifest.json")
    return members


def bundle_ref(data: bytes) -> tuple[str, str]:
    """(bundle_id, bundle_version) that a .flow zip's manifest names, its flows left unread.

    For health, which lists the flows dir every few seconds: reading each bundle whole decoded the
    sample flows' 247 KB of JSON every time, and the first time left ~1.1 MB more in a serve's RSS."""
    zf, members = _open_zip(data)
    with zf:
        try:
            raw = _read_member(zf, members["manifest.json"])
        except (zipfile.BadZipFile, RuntimeError, OSError, EOFError) as exc:
            raise BundleInvalid(f"bundle file 'manifest.json' cannot be read: {exc}") from None
    manifest = _json_object(raw, "manifest.json")
    bundle_id = _check_name(manifest.get("bundle_id"), "bundle_id")
    return bundle_id, _check_name(manifest.get("bundle_version", "0.0.0"), "bundle_version")


def read_bundle(data: bytes) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(manifest, {flow_id: VisualFlow JSON}) of a .flow zip; raises BundleInvalid with the reason."""
    zf, members = _open_zip(data)
    with zf:
        total = 0

        def read(name: str) -> bytes:
            nonlocal total
            try:
                raw = _read_member(zf, members[name])
            except (zipfile.BadZipFile, RuntimeError, OSError, EOFError) as exc:
                raise BundleInvalid(f"bundle file {name!r} cannot be read: {exc}") from None
            total += len(raw)
            if total > MAX_TOTAL_BYTES:
                raise BundleInvalid(f"bundle is over {MAX_TOTAL_BYTES} bytes uncompressed")
            return raw

        manifest = _json_object(read("manifest.json"), "manifest.json")
        flows = _check_manifest(manifest, members)
        documents = {
            flow_id: _json_object(read(path), f"flow {flow_id!r} ({path})") for flow_id, path in flows
        }
    return manifest, documents


def _check_manifest(manifest: dict[str, Any], members: dict[str, zipfile.ZipInfo]) -> list[tuple[str, str]]:
    _check_name(manifest.get("bundle_id"), "bundle_id")
    _check_name(manifest.get("bundle_version", "0.0.0"), "bundle_version")
    manifest.setdefault("bundle_version", "0.0.0")
    flows = manifest.get("flows")
    if not isinstance(flows, dict) or not flows:
        raise BundleInvalid("manifest flows must be a non-empty object {flow_id: path}")
    listed: list[tuple[str, str]] = []
    for flow_id, path in flows.items():
        _check_name(flow_id, "flow id")
        if not isinstance(path, str) or not _safe_member(path):
            raise BundleInvalid(f"manifest flow {flow_id!r} has unsafe path {path!r}")
        if path not in members:
            raise BundleInvalid(f"manifest flow {flow_id!r} names {path!r}, which is not in the bundle")
        listed.append((flow_id, path))
    entrypoints = manifest.get("entrypoints")
    if not isinstance(entrypoints, list) or not entrypoints:
        raise BundleInvalid("manifest entrypoints must be a non-empty list")
    names: list[str] = []
    for entry in entrypoints:
        flow_id = entry.get("flow_id") if isinstance(entry, dict) else None
        if not isinstance(flow_id, str) or flow_id not in flows:
            raise BundleInvalid(f"entrypoint {entry!r} must name a flow_id listed in manifest flows")
        names.append(flow_id)
    default = manifest.get("default_entrypoint")
    if default is not None and default not in names:
        raise BundleInvalid(
            f"default_entrypoint {default!r} is not an entrypoint; entrypoints: {', '.join(names)}"
        )
    return listed


@dataclass(frozen=True)
class ParsedBundle:
    """A .flow zip validated, parsed and hashed once: the API does it in a worker thread (off the
    event loop), and the writer's transaction only stores the result."""

    data: bytes
    sha256: str
    manifest: dict[str, Any]
    documents: dict[str, dict[str, Any]]

    @property
    def bundle_id(self) -> str:
        return str(self.manifest["bundle_id"])

    @property
    def bundle_version(self) -> str:
        return str(self.manifest["bundle_version"])


def parse_bundle(data: bytes) -> ParsedBundle:
    """The validated bundle (every listed flow present and JSON, and no code when the gateway runs
    none: BundleHasCode with each place named)."""
    from .bundle_code import code_refusal

    manifest, documents = read_bundle(data)
    refusal = code_refusal(documents)
    if refusal is not None:
        raise BundleHasCode(refusal)
    return ParsedBundle(data, hashlib.sha256(data).hexdigest(), manifest, documents)


def read_manifest(data: bytes) -> dict[str, Any]:
    """The validated manifest of a .flow zip (see parse_bundle)."""
    return parse_bundle(data).manifest


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for bundle versions: numeric parts numerically (1.10.0 > 1.9.0), the rest as text."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\-+_]", version))
