"""Bundles: list, show, input schema, upload (validated and compile-checked), delete, deprecate.

The db is the catalogue (uploads and ABSTRACTGATEWAY_FLOWS_DIR imports alike), so the contract's
`reload` flags have nothing to do here: they are accepted and ignored. Uploads are compiled in a
child process (`python -m runner_service.bundle_check`): the API never imports abstractruntime.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import Request

from shared_store import bundles
from shared_store.bundle_files import BundleInvalid
from shared_store.db import Database

from ..access import ADMIN, READ
from ..errors import ApiError
from ..http import ApiRoute, blocking, reading
from ..schemas import (
    BundleDeleteQuery,
    BundleItem,
    BundleList,
    BundleListQuery,
    BundleVersionQuery,
    DeprecateRequest,
    DeprecationResponse,
    InputPin,
    InputSchema,
    RemovedResponse,
    UndeprecateRequest,
    UploadForm,
)
from . import gateway

CHECK_TIMEOUT_S = 120.0


def _ref(bundle_id: str, bundle_version: str | None) -> tuple[str, str | None]:
    """`id@version` in the path names a version too; a different ?bundle_version is a conflict."""
    base, _, version = bundle_id.partition("@")
    if version and bundle_version and version != bundle_version:
        raise ApiError(400, f"bundle_id names version {version} but bundle_version is {bundle_version}")
    return base, version or bundle_version


async def list_bundles(request: Request, query: BundleListQuery) -> object:
    """Bundles: the newest version of each unless all_versions; deprecated ones hidden by default."""
    infos = await reading(
        bundles.list_bundles,
        gateway(request).db,
        all_versions=query.all_versions,
        include_deprecated=query.include_deprecated,
    )
    return {"items": [info.to_json() for info in infos]}


def _bundle_detail(db: Database, bundle_id: str, version: str | None) -> dict[str, Any]:
    info = bundles.get_bundle(db, bundle_id, version)
    doc = info.to_json()
    documents = bundles.flow_documents(db, info.bundle_id, info.bundle_version)
    for entry in doc["entrypoints"]:
        # As the original's detail: each entrypoint's input pins and its nodes (id -> type, label).
        flow = documents.get(entry["flow_id"]) or {}
        entry["inputs"] = [
            {"id": pin.id, "label": pin.label, "type": pin.type, "required": pin.required}
            for pin in input_pins(flow)
        ]
        entry["node_index"] = {
            str(node["id"]): _node_entry(node)
            for node in flow.get("nodes") or []
            if isinstance(node, dict) and node.get("id") is not None
        }
    return doc


def _dict(value: object) -> dict[str, Any]:
    """A JSON object from a flow document, or {} where it holds something else (or nothing)."""
    return value if isinstance(value, dict) else {}


def _node_entry(node: dict[str, Any]) -> dict[str, str]:
    data = _dict(node.get("data"))
    kind = str(data.get("nodeType") or node.get("type") or "unknown")
    return {"type": kind, "label": str(data.get("label") or node.get("label") or node["id"])}


async def get_bundle(request: Request, query: BundleVersionQuery) -> object:
    """One bundle (the newest version unless ?bundle_version=), with each entrypoint's inputs."""
    bundle_id, version = _ref(request.path_params["bundle_id"], query.bundle_version)
    return await reading(_bundle_detail, gateway(request).db, bundle_id, version)


def _entry_node(flow: dict[str, Any]) -> dict[str, Any] | None:
    nodes = [n for n in flow.get("nodes") or [] if isinstance(n, dict)]
    entry = flow.get("entryNode")
    return next((n for n in nodes if n.get("id") == entry), None) or next(
        (n for n in nodes if n.get("type") == "on_flow_start"), None
    )


async def input_schema(request: Request, query: BundleVersionQuery) -> object:
    """The entry flow's input pins: the start node's data outputs, with their defaults."""
    db = gateway(request).db
    bundle_id, version = _ref(request.path_params["bundle_id"], query.bundle_version)
    info = await reading(bundles.get_bundle, db, bundle_id, version)
    flow_id = request.path_params["flow_id"]
    flow = await reading(bundles.flow_json, db, info.bundle_id, info.bundle_version, flow_id)
    node = _entry_node(flow) or {}
    data = _dict(node.get("data"))
    given = _dict(data.get("pinDefaults"))
    pins = input_pins(flow)
    document: dict[str, Any] = {
        "type": "object",
        "additionalProperties": True,
        "properties": {pin.id: pin.schema for pin in pins},
    }
    required = [pin.id for pin in pins if pin.required]
    if required:
        document["required"] = required
    return InputSchema(
        info.bundle_id,
        info.bundle_version,
        flow_id,
        pins,
        bundle_ref=info.bundle_ref,
        workflow_id=f"{info.bundle_ref}:{flow_id}",
        defaults={pin.id: given[pin.id] for pin in pins if pin.id in given},
        input_data_schema=document,
    )


# VisualFlow pin types -> JSON Schema types (the rest, "any" included, take any value).
_JSON_TYPES = {
    **dict.fromkeys(
        ("string", "text", "markdown", "path", "file", "directory", "provider", "model"), "string"
    ),
    **dict.fromkeys(("number", "float", "double"), "number"),
    **dict.fromkeys(("integer", "int"), "integer"),
    **dict.fromkeys(("boolean", "bool"), "boolean"),
    **dict.fromkeys(("array", "list"), "array"),
    **dict.fromkeys(("object", "dict", "map", "json"), "object"),
}


def _pin_schema(pin: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    raw = str(pin.get("type") or "").strip()
    schema: dict[str, Any] = {}
    if raw.lower() in _JSON_TYPES:
        schema["type"] = _JSON_TYPES[raw.lower()]
    if raw:
        schema["x-abstract-type"] = raw
    label, pin_id = pin.get("label"), str(pin.get("id"))
    if label and label != pin_id:
        schema["title"] = str(label)
    if pin_id in defaults:
        schema["default"] = defaults[pin_id]
    return schema


def input_pins(flow: dict[str, Any]) -> list[InputPin]:
    """The entry node's data outputs, with their defaults and JSON Schemas."""
    node = _entry_node(flow) or {}
    data = _dict(node.get("data"))
    defaults = _dict(data.get("pinDefaults"))
    return [
        InputPin(
            str(pin.get("id")),
            pin.get("label"),
            pin.get("type"),
            defaults.get(str(pin.get("id"))),
            pin.get("required") is True,
            _pin_schema(pin, defaults),
        )
        for pin in data.get("outputs") or []
        if isinstance(pin, dict) and pin.get("type") != "execution"
    ]


def _form_bool(value: object, name: str) -> bool:
    if value is None or value == "":
        return False
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ApiError(422, f"form field {name!r} must be true or false, not {str(value)[:40]!r}")


async def compile_check(data: bytes) -> None:
    """Compile every flow in a child process; a failure is a 400 with the compiler's reason."""
    with anyio.fail_after(CHECK_TIMEOUT_S):
        done = await anyio.run_process(
            [sys.executable, "-m", "runner_service.bundle_check"], input=data, check=False
        )
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip()[-2000:] or f"exit status {done.returncode}"
        raise BundleInvalid(f"bundle does not compile: {reason}")


async def upload_bundle(request: Request) -> object:
    """Upload a .flow zip (multipart `file`): validated, compile-checked, then stored; 409 if it exists."""
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "multipart/form-data field 'file' (a .flow zip) is required")
        overwrite = _form_bool(form.get("overwrite"), "overwrite")
        _form_bool(form.get("reload"), "reload")
        data = await upload.read()
    # Inflate, decode and hash once, in a worker thread: a 128 MiB bundle would stall every request
    # and stream on the event loop, and the writer's transaction (which blocks all other writes) only
    # stores what this produced.
    parsed = await anyio.to_thread.run_sync(bundles.parse_bundle, data)
    db = gateway(request).db
    # The audit line (api_service.middleware.audit) names the bundle and both hashes, refused or not.
    audit: dict[str, Any] = {
        "bundle_ref": f"{parsed.bundle_id}@{parsed.bundle_version}",
        "action": "overwrite" if overwrite else "upload",
        "new_sha256": parsed.sha256,
    }
    request.state.audit = audit
    if not overwrite:  # refuse before paying for the compile
        try:
            await reading(bundles.get_bundle, db, parsed.bundle_id, parsed.bundle_version)
        except bundles.UnknownBundle:
            pass
        else:
            raise bundles.BundleExists(
                f"bundle {parsed.bundle_id}@{parsed.bundle_version} exists; upload with overwrite=true"
            )
    await compile_check(data)
    info, old_sha = await blocking(_put, db, parsed, overwrite=overwrite)
    audit["old_sha256"] = old_sha
    return info.to_json()


def _put(
    db: Database, parsed: bundles.ParsedBundle, *, overwrite: bool
) -> tuple[bundles.BundleInfo, str | None]:
    """Store the bundle and say what it replaced, in one transaction (the writer's group commit)."""
    with db.write():
        old = bundles.bundle_sha(db, parsed.bundle_id, parsed.bundle_version)
        return bundles.put_bundle(db, parsed, overwrite=overwrite), old


def _delete(db: Database, bundle_id: str, version: str | None) -> tuple[int, dict[str, str]]:
    with db.write():
        old = bundles.bundle_shas(db, bundle_id, version)
        return bundles.delete_bundle(db, bundle_id, version), old


async def delete_bundle(request: Request, query: BundleDeleteQuery) -> object:
    """Remove one version (or all); runs already started keep working."""
    bundle_id, version = _ref(request.path_params["bundle_id"], query.bundle_version)
    removed, old = await blocking(_delete, gateway(request).db, bundle_id, version)
    request.state.audit = {"action": "delete", "old_sha256": old}
    if not removed:
        shown = f"{bundle_id}@{version}" if version else bundle_id
        raise ApiError(404, f"Bundle '{shown}' not found")
    return RemovedResponse(removed)


async def deprecate(request: Request, body: DeprecateRequest) -> object:
    """Refuse new starts of the bundle (or one flow) with 409 and the reason; running runs continue."""
    bundle_id = request.path_params["bundle_id"]
    at = await blocking(
        bundles.deprecate, gateway(request).db, bundle_id, flow_id=body.flow_id, reason=body.reason
    )
    return DeprecationResponse(bundle_id, body.flow_id, True, body.reason, deprecated_at=at)


async def undeprecate(request: Request, body: UndeprecateRequest) -> object:
    """Allow new starts again."""
    bundle_id = request.path_params["bundle_id"]
    removed = await blocking(bundles.undeprecate, gateway(request).db, bundle_id, flow_id=body.flow_id)
    return DeprecationResponse(bundle_id, body.flow_id, False, removed=removed)


_TAGS = ["bundles"]
routes = [
    ApiRoute(
        "/api/gateway/bundles",
        list_bundles,
        methods=["GET"],
        summary="List bundles",
        tags=_TAGS,
        query=BundleListQuery,
        response=BundleList,
        needs=READ,
        bound="open",
    ),
    ApiRoute(
        "/api/gateway/bundles/upload",
        upload_bundle,
        methods=["POST"],
        summary="Upload a .flow bundle",
        tags=_TAGS,
        multipart=UploadForm,
        response=BundleItem,
        errors=(400, 409, 413, 422),
        needs=ADMIN,
    ),
    ApiRoute(
        "/api/gateway/bundles/{bundle_id}",
        get_bundle,
        methods=["GET"],
        summary="Show a bundle",
        tags=_TAGS,
        query=BundleVersionQuery,
        response=BundleItem,
        errors=(404,),
        needs=READ,
        bound="open",
    ),
    ApiRoute(
        "/api/gateway/bundles/{bundle_id}",
        delete_bundle,
        methods=["DELETE"],
        summary="Remove a bundle",
        tags=_TAGS,
        query=BundleDeleteQuery,
        response=RemovedResponse,
        errors=(404,),
        needs=ADMIN,
    ),
    ApiRoute(
        "/api/gateway/bundles/{bundle_id}/flows/{flow_id}/input_schema",
        input_schema,
        methods=["GET"],
        summary="A flow's input pins",
        tags=_TAGS,
        query=BundleVersionQuery,
        response=InputSchema,
        errors=(404,),
        needs=READ,
        bound="open",
    ),
    ApiRoute(
        "/api/gateway/bundles/{bundle_id}/deprecate",
        deprecate,
        methods=["POST"],
        summary="Deprecate a bundle or flow",
        tags=_TAGS,
        body=DeprecateRequest,
        response=DeprecationResponse,
        errors=(404,),
        needs=ADMIN,
    ),
    ApiRoute(
        "/api/gateway/bundles/{bundle_id}/undeprecate",
        undeprecate,
        methods=["POST"],
        summary="Undeprecate a bundle or flow",
        tags=_TAGS,
        body=UndeprecateRequest,
        response=DeprecationResponse,
        errors=(404,),
        needs=ADMIN,
    ),
]
