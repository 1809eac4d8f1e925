"""The bundle catalogue in the db: uploads, flows-dir imports, versions, deprecation, workflow resolution.

API-safe (no abstractruntime): the API lists and resolves from here; runners compile what it stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import queries as q
from .bundle_files import (
    BundleError,
    BundleInvalid,
    ParsedBundle,
    parse_bundle,
    read_bundle,
    read_manifest,
    version_key,
)
from .codec import decode, encode, utc_now_iso
from .db import Database
from .visualflow_files import visualflow_bundles

__all__ = [
    "BundleConflict",
    "BundleError",
    "BundleExists",
    "BundleInfo",
    "BundleInvalid",
    "FlowDeprecated",
    "ParsedBundle",
    "ResolvedWorkflow",
    "UnknownBundle",
    "UnknownFlow",
    "bundle_content",
    "compile_failures",
    "delete_bundle",
    "deprecate",
    "flow_json",
    "get_bundle",
    "import_flows_dir",
    "list_bundles",
    "parse_bundle",
    "put_bundle",
    "read_manifest",
    "record_check",
    "resolve_workflow",
    "undeprecate",
]


class BundleExists(BundleError):
    kind = "conflict"


class UnknownBundle(BundleError):
    kind = "not_found"


class UnknownFlow(BundleError):
    kind = "not_found"


class BundleConflict(BundleError):
    pass


class FlowDeprecated(BundleError):
    kind = "conflict"


@dataclass(frozen=True)
class ResolvedWorkflow:
    workflow_id: str
    bundle_id: str
    bundle_version: str
    flow_id: str
    name: str | None = None  # the entrypoint's name (the original's resolved_workflow.name)


@dataclass(frozen=True)
class BundleInfo:
    bundle_id: str
    bundle_version: str
    sha256: str
    size_bytes: int
    manifest: dict[str, Any]
    source: str
    created_at: str
    deprecated: bool = False
    deprecation_reason: str | None = None
    deprecated_flows: dict[str, str | None] = field(default_factory=dict)
    # When each mark was set, by flow_id ('' for the whole bundle): the original's `deprecated_at`.
    deprecated_at: dict[str, str] = field(default_factory=dict)
    compile_error: str | None = None

    @property
    def bundle_ref(self) -> str:
        return f"{self.bundle_id}@{self.bundle_version}"

    @property
    def entrypoint_ids(self) -> list[str]:
        return [str(entry["flow_id"]) for entry in self.manifest.get("entrypoints", [])]

    @property
    def default_entrypoint(self) -> str | None:
        default = self.manifest.get("default_entrypoint")
        if default:
            return str(default)
        ids = self.entrypoint_ids
        return ids[0] if len(ids) == 1 else None

    def to_json(self) -> dict[str, Any]:
        entrypoints = []
        for entry in self.manifest.get("entrypoints", []):
            flow_id = str(entry["flow_id"])
            item = {"flow_id": flow_id, "name": entry.get("name") or flow_id}
            item["description"] = entry.get("description") or ""
            item["interfaces"] = entry.get("interfaces") or []
            item["workflow_id"] = f"{self.bundle_ref}:{flow_id}"  # what a start by flow_id names
            item["deprecated"] = flow_id in self.deprecated_flows
            if flow_id in self.deprecated_flows:
                item["deprecation_reason"] = self.deprecated_flows[flow_id]
            # The original's view: an entrypoint is deprecated by its own mark or its bundle's.
            mark = flow_id if flow_id in self.deprecated_flows else ("" if self.deprecated else None)
            if mark is not None:
                item["deprecated"] = True
            item["deprecated_at"] = None if mark is None else self.deprecated_at.get(mark)
            item["deprecated_reason"] = (
                None
                if mark is None
                else (self.deprecated_flows.get(mark) if mark else self.deprecation_reason)
            )
            entrypoints.append(item)
        return {
            "bundle_id": self.bundle_id,
            "bundle_version": self.bundle_version,
            "bundle_ref": self.bundle_ref,
            "default_entrypoint": self.default_entrypoint,
            "entrypoints": entrypoints,
            "flows": sorted(self.manifest.get("flows", {})),
            "metadata": self.manifest.get("metadata") or {},
            "created_at": self.created_at,
            "source": self.source,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "deprecated": self.deprecated,
            "deprecation_reason": self.deprecation_reason,
            "compile_error": self.compile_error,
        }


def _row_params(bundle: ParsedBundle, source: str) -> dict[str, Any]:
    return {
        "bundle_id": bundle.bundle_id,
        "bundle_version": bundle.bundle_version,
        "sha256": bundle.sha256,
        "size_bytes": len(bundle.data),
        "content": bundle.data,
        "manifest": encode(bundle.manifest),
        "source": source,
        "created_at": utc_now_iso(),
    }


def put_bundle(
    db: Database, bundle: ParsedBundle | bytes, *, overwrite: bool = False, source: str = "upload"
) -> BundleInfo:
    """Store a bundle (parsed already, or zip bytes parsed here); an existing id@version is kept
    (BundleExists) unless overwrite. A ParsedBundle is stored as it is: no zip is opened here, so a
    caller inside the writer's transaction pays only for the insert."""
    parsed = bundle if isinstance(bundle, ParsedBundle) else parse_bundle(bundle)
    params = _row_params(parsed, source)
    with db.write() as conn:
        conn.execute(q.REPLACE_BUNDLE if overwrite else q.INSERT_BUNDLE, params)
        if conn.changes() == 0:
            raise BundleExists(
                f"bundle {params['bundle_id']}@{params['bundle_version']} exists; upload with overwrite=true"
            )
    return get_bundle(db, params["bundle_id"], params["bundle_version"])


def import_flows_dir(db: Database, path: str | Path) -> list[str]:
    """Load `.flow` bundles and VisualFlow `*.json` files (a file or a folder of them) into the
    catalogue; returns problems, never raises.

    A file whose id@version was uploaded is left alone; one changed on disk replaces its older import.
    A VisualFlow file becomes a one-flow bundle `<id>@0.0.0` (shared_store.visualflow_files)."""
    root = Path(path)
    if root.is_file():
        flow_files, json_files = ([root], []) if root.suffix != ".json" else ([], [root])
    elif root.is_dir():
        flow_files, json_files = sorted(root.glob("*.flow")), sorted(root.glob("*.json"))
    else:
        flow_files, json_files = [], []
    problems = [] if flow_files or json_files or root.exists() else [f"{root}: no such file or folder"]
    loaded: list[tuple[Path, bytes]] = []
    for file in flow_files:
        try:
            loaded.append((file, file.read_bytes()))
        except OSError as exc:
            problems.append(f"{file.name}: {exc}")
    if json_files:
        bundles, json_problems = visualflow_bundles(json_files)
        loaded += bundles
        problems += json_problems
    seen: dict[tuple[str, str], str] = {}
    for file, data in loaded:
        try:
            parsed = parse_bundle(data)
        except BundleError as exc:
            problems.append(f"{file.name}: {exc}")
            continue
        ref = (parsed.bundle_id, parsed.bundle_version)
        if ref in seen:
            problems.append(f"{file.name}: {ref[0]}@{ref[1]} is also {seen[ref]}; kept that one")
            continue
        seen[ref] = file.name
        problem = _import_one(db, parsed)
        if problem:
            problems.append(f"{file.name}: {problem}")
    return problems


def _import_one(db: Database, bundle: ParsedBundle) -> str | None:
    params = _row_params(bundle, "flows_dir")
    with db.write() as conn:
        existing = conn.execute(q.BUNDLE_SOURCE, (params["bundle_id"], params["bundle_version"])).fetchone()
        if existing is None:
            conn.execute(q.INSERT_BUNDLE_IF_ABSENT, params)
        elif existing[0] == "flows_dir" and existing[1] != params["sha256"]:
            conn.execute(q.REPLACE_BUNDLE, params)
        elif existing[0] != "flows_dir" and existing[1] != params["sha256"]:
            return f"{params['bundle_id']}@{params['bundle_version']} was uploaded; kept"
    return None


def _infos(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[BundleInfo]:
    deprecations: dict[str, dict[str, str | None]] = {}
    marked_at: dict[str, dict[str, str]] = {}
    for bundle_id, flow_id, reason, created_at in db.query(q.DEPRECATIONS):
        deprecations.setdefault(bundle_id, {})[flow_id] = reason
        marked_at.setdefault(bundle_id, {})[flow_id] = created_at
    checks = {(b, v, s): err for b, v, s, err in db.query(q.BUNDLE_CHECKS)}
    infos = []
    for bundle_id, version, sha, size, manifest, source, created_at in db.query(sql, params):
        marks = deprecations.get(bundle_id, {})
        infos.append(
            BundleInfo(
                bundle_id=bundle_id,
                bundle_version=version,
                sha256=sha,
                size_bytes=int(size),
                manifest=decode(manifest),
                source=source,
                created_at=created_at,
                deprecated="" in marks,
                deprecation_reason=marks.get(""),
                deprecated_flows={k: v for k, v in marks.items() if k},
                deprecated_at=marked_at.get(bundle_id, {}),
                compile_error=checks.get((bundle_id, version, sha)),
            )
        )
    return infos


def _newest(infos: list[BundleInfo]) -> BundleInfo:
    return max(infos, key=lambda info: version_key(info.bundle_version))


def list_bundles(
    db: Database, *, all_versions: bool = False, include_deprecated: bool = False
) -> list[BundleInfo]:
    """Bundles by id; only the newest version of each unless all_versions; deprecated hidden by default."""
    by_id: dict[str, list[BundleInfo]] = {}
    for info in _infos(db, q.ALL_BUNDLES):
        by_id.setdefault(info.bundle_id, []).append(info)
    chosen: list[BundleInfo] = []
    for versions in by_id.values():
        versions.sort(key=lambda info: version_key(info.bundle_version), reverse=True)
        chosen.extend(versions if all_versions else versions[:1])
    return [info for info in chosen if include_deprecated or not info.deprecated]


def get_bundle(db: Database, bundle_id: str, bundle_version: str | None = None) -> BundleInfo:
    """One version (the newest when bundle_version is None); raises UnknownBundle."""
    versions = _infos(db, q.BUNDLE_VERSIONS, (bundle_id,))
    if bundle_version is not None:
        versions = [info for info in versions if info.bundle_version == bundle_version]
    if not versions:
        shown = f"{bundle_id}@{bundle_version}" if bundle_version else bundle_id
        raise UnknownBundle(f"Bundle '{shown}' not found")
    return _newest(versions)


def bundle_content(db: Database, bundle_id: str, bundle_version: str) -> bytes:
    """The zip bytes of one stored version; raises UnknownBundle."""
    row = db.query_one(q.BUNDLE_CONTENT, (bundle_id, bundle_version))
    if row is None:
        raise UnknownBundle(f"Bundle '{bundle_id}@{bundle_version}' not found")
    return bytes(row[0])


def flow_documents(db: Database, bundle_id: str, bundle_version: str) -> dict[str, dict[str, Any]]:
    """Every flow's VisualFlow JSON of a stored bundle, by flow id."""
    _, documents = read_bundle(bundle_content(db, bundle_id, bundle_version))
    return documents


def flow_json(db: Database, bundle_id: str, bundle_version: str, flow_id: str) -> dict[str, Any]:
    """The VisualFlow JSON of one flow of a stored bundle."""
    data = bundle_content(db, bundle_id, bundle_version)
    _, documents = read_bundle(data)
    if flow_id not in documents:
        raise UnknownFlow(
            f"Flow '{flow_id}' not found in bundle '{bundle_id}@{bundle_version}'; flows: {', '.join(documents)}"
        )
    return documents[flow_id]


def delete_bundle(db: Database, bundle_id: str, bundle_version: str | None = None) -> int:
    """Remove one version, or every version; returns how many. Runs already started keep working:
    the row stays for runners to compile, hidden from listings and new starts."""
    if bundle_version is None:
        return db.execute_write(q.REMOVE_BUNDLE_ALL, (utc_now_iso(), bundle_id))
    return db.execute_write(q.REMOVE_BUNDLE_VERSION, (utc_now_iso(), bundle_id, bundle_version))


def deprecate(db: Database, bundle_id: str, *, flow_id: str | None = None, reason: str | None = None) -> str:
    """Refuse new starts of the bundle (or one of its flows) from now on; running runs continue.
    Returns when the mark was set."""
    info = get_bundle(db, bundle_id)
    if flow_id and flow_id not in info.manifest.get("flows", {}):
        raise UnknownFlow(f"Flow '{flow_id}' not found in bundle '{bundle_id}'")
    now = utc_now_iso()
    db.execute_write(
        q.DEPRECATE, {"bundle_id": bundle_id, "flow_id": flow_id or "", "reason": reason, "created_at": now}
    )
    return now


def undeprecate(db: Database, bundle_id: str, *, flow_id: str | None = None) -> bool:
    get_bundle(db, bundle_id)
    return db.execute_write(q.UNDEPRECATE, (bundle_id, flow_id or "")) > 0


def record_check(db: Database, info: BundleInfo, compile_error: str | None) -> None:
    """A runner's compile outcome for this exact content (reported by health and listings)."""
    db.execute_write(
        q.RECORD_BUNDLE_CHECK,
        {
            "bundle_id": info.bundle_id,
            "bundle_version": info.bundle_version,
            "sha256": info.sha256,
            "compile_error": compile_error,
            "checked_at": utc_now_iso(),
        },
    )


def compile_failures(db: Database) -> list[str]:
    """Catalogued bundles a runner could not compile, with the reason (health reports them)."""
    return [f"bundle {b}@{v} does not compile: {err}" for b, v, err in db.query(q.COMPILE_FAILURES)]


def _split_ref(ref: str) -> tuple[str, str | None]:
    bundle_id, _, version = ref.partition("@")
    return bundle_id, version or None


def resolve_workflow(
    db: Database,
    *,
    bundle_id: str | None = None,
    flow_id: str | None = None,
    bundle_version: str | None = None,
) -> ResolvedWorkflow:
    """Which workflow a start names (CONTRACT: Runs / start), refusing deprecated bundles and flows."""
    if not bundle_id:
        if not flow_id or ":" not in flow_id:
            raise BundleInvalid(
                "name the workflow: bundle_id (+ flow_id), or flow_id as 'bundle@version:flow'"
            )
        ref, _, flow_id = flow_id.rpartition(":")
        bundle_id = ref
    elif flow_id and ":" in flow_id:
        ref, _, flow_id = flow_id.rpartition(":")
        if _split_ref(ref)[0] != _split_ref(bundle_id)[0]:
            raise BundleConflict(f"flow_id names bundle '{ref}' but bundle_id is '{bundle_id}'")
    bundle_id, ref_version = _split_ref(bundle_id)
    if ref_version and bundle_version and ref_version != bundle_version:
        raise BundleConflict(f"bundle_id names version {ref_version} but bundle_version is {bundle_version}")
    info = get_bundle(db, bundle_id, ref_version or bundle_version)
    if not flow_id:
        flow_id = info.default_entrypoint
        if flow_id is None:
            raise BundleInvalid(
                f"bundle '{info.bundle_ref}' has several entrypoints ({', '.join(info.entrypoint_ids)}); "
                "name one with flow_id"
            )
    if flow_id not in info.manifest.get("flows", {}):
        raise UnknownFlow(
            f"Flow '{flow_id}' not found in bundle '{info.bundle_ref}'; entrypoints: {', '.join(info.entrypoint_ids)}"
        )
    if info.deprecated:
        raise FlowDeprecated(
            f"bundle '{bundle_id}' is deprecated: {info.deprecation_reason or 'no reason given'}"
        )
    if flow_id in info.deprecated_flows:
        reason = info.deprecated_flows[flow_id] or "no reason given"
        raise FlowDeprecated(f"flow '{flow_id}' of bundle '{bundle_id}' is deprecated: {reason}")
    entry: dict[str, Any] = next(
        (e for e in info.manifest.get("entrypoints", []) if e.get("flow_id") == flow_id), {}
    )
    name = str(entry.get("name") or flow_id)
    return ResolvedWorkflow(
        f"{info.bundle_ref}:{flow_id}", info.bundle_id, info.bundle_version, flow_id, name
    )


def bundle_shas(db: Database, bundle_id: str, bundle_version: str | None) -> dict[str, str]:
    """version -> sha256 of the live versions a delete would remove (audit: what was there)."""
    return {str(v): str(s) for v, s in db.query(q.BUNDLE_SHA, (bundle_id, bundle_version, bundle_version))}


def bundle_sha(db: Database, bundle_id: str, bundle_version: str) -> str | None:
    """The stored sha256 of id@version (removed or not), or None."""
    row = db.query_one(q.BUNDLE_SHA_ANY, (bundle_id, bundle_version))
    return None if row is None else str(row[0])


# (path, mtime_ns, size) -> (bundle_id, bundle_version, sha256): health asks often, files rarely change.
_FLOW_FILE_IDS: dict[tuple[str, int, int], tuple[str, str, str]] = {}


def shadowed_flow_files(db: Database, path: str | Path) -> list[str]:
    """Flows-dir files whose id@version is served from an upload with other content: the operator's
    file is not what runs (reported by health, so an upload that replaced it cannot go unnoticed)."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(root.glob("*.flow")) if root.is_dir() else []
    shadowed = []
    for file in files:
        try:
            stat = file.stat()
            key = (str(file), stat.st_mtime_ns, stat.st_size)
            ids = _FLOW_FILE_IDS.get(key)
            if ids is None:
                parsed = parse_bundle(file.read_bytes())
                ids = (parsed.bundle_id, parsed.bundle_version, parsed.sha256)
                if len(_FLOW_FILE_IDS) > 10_000:
                    _FLOW_FILE_IDS.clear()
                _FLOW_FILE_IDS[key] = ids
        except (OSError, BundleError):
            continue  # unreadable files are reported at import, not here
        row = db.query_one(q.BUNDLE_SOURCE, (ids[0], ids[1]))
        if row is not None and row[0] != "flows_dir" and row[1] != ids[2]:
            shadowed.append(
                f"{file.name}: {ids[0]}@{ids[1]} is served from an upload "
                f"(sha256 {str(row[1])[:12]}), not this file (sha256 {ids[2][:12]})"
            )
    return shadowed
