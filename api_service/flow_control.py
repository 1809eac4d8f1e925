"""A start's or a schedule's workflow and flow-control fields, merged over what its bundle declares.

The workflow a start names is resolved once per bundle state, not once per start: resolve_workflow
reads every deprecation, compile check and version manifest of the bundle, and the declared flow
control needs the manifest again — 45-60 us of the writer thread per start (bench_api, c16), for an
answer that depends on the bundle's live versions (their sha256) and its deprecation marks alone.
Those are read on every start instead (two primary-key range reads, in the start's own transaction)
and the previous answer is reused while they are unchanged: an upload, overwrite, delete or
(un)deprecation — through this process, another API worker or the CLI — changes them, so a start
never runs on a stale resolution. Refusals (unknown, deprecated) are not cached: they resolve anew.
"""

from __future__ import annotations

from typing import Any

from shared_store import bundles
from shared_store.db import Database
from shared_store.flow_control import FlowRequest, FlowSettings, declared_flow
from shared_store.reads import BundleMarker, bundle_manifest, bundle_marker

from .schemas import FlowControlFields

# (bundle_id, flow_id, bundle_version) as the request named them -> (the bundle resolved, its
# marker, the resolution, the declared flow control). Requests name few distinct workflows; a client
# cycling names must not grow it without bound.
_MAX_CACHED = 1024
_resolved: dict[
    tuple[str | None, str | None, str | None],
    tuple[str, BundleMarker, bundles.ResolvedWorkflow, FlowRequest],
] = {}


def flow_request(body: FlowControlFields) -> FlowRequest:
    rate = body.rate_limit
    return FlowRequest(
        priority=body.priority,
        concurrency_key=body.concurrency_key,
        max_concurrent=body.max_concurrent,
        overflow=body.overflow,
        count_waiting=body.count_waiting,
        rate_limit=None if rate is None else rate.limit,
        rate_window_s=None if rate is None else float(rate.window_s),
        requires=None if body.requires is None else list(body.requires),
    )


def declared(db: Database, resolved: bundles.ResolvedWorkflow) -> FlowRequest:
    """What the bundle declares for the resolved flow (a bad declaration is the bundle's 422).

    The manifest alone, by primary key: get_bundle also reads every deprecation and compile check
    and decodes every version's manifest."""
    manifest = bundle_manifest(db, resolved.bundle_id, resolved.bundle_version)
    if manifest is None:  # resolved in this same transaction: gone only if removed meanwhile
        raise bundles.UnknownBundle(f"Bundle '{resolved.bundle_id}@{resolved.bundle_version}' not found")
    return declared_flow(manifest, resolved.flow_id)


def resolve(
    db: Database, bundle_id: str | None, flow_id: str | None, bundle_version: str | None
) -> tuple[bundles.ResolvedWorkflow, FlowRequest]:
    """The workflow a start or schedule names and what its bundle declares (raises as resolve_workflow)."""
    key = (bundle_id, flow_id, bundle_version)

    def resolve_now() -> bundles.ResolvedWorkflow:
        return bundles.resolve_workflow(
            db, bundle_id=bundle_id, flow_id=flow_id, bundle_version=bundle_version
        )

    cached = _resolved.get(key)
    if cached is not None:
        marker = bundle_marker(db, cached[0])
        if marker == cached[1]:
            return cached[2], cached[3]
    else:  # the bundle a request names is known once resolved
        marker = bundle_marker(db, resolve_now().bundle_id)
    # The marker is read before the resolution cached under it: on PostgreSQL (read committed: each
    # statement sees the latest commit) a change landing between them leaves an older marker, which
    # the next start finds changed; never a newer marker over an older resolution.
    resolved = resolve_now()
    flow = declared(db, resolved)
    if len(_resolved) >= _MAX_CACHED:
        _resolved.clear()
    _resolved[key] = (resolved.bundle_id, marker, resolved, flow)
    return resolved, flow


_FIELDS = tuple(FlowControlFields.__struct_fields__)
_NOTHING_ASKED = FlowRequest()
_DEFAULTS = FlowSettings.resolve(_NOTHING_ASKED, {})


def flow_settings(
    body: FlowControlFields, declared_flow_request: FlowRequest, input_data: dict[str, Any]
) -> FlowSettings:
    """Resolved for one run: the request's fields over the bundle's, the key rendered over its input
    (FlowControlError: 422). Most starts ask for nothing and run bundles that declare nothing: they
    share one resolved (frozen) value, not a merge of two empty requests each (~10 us a start)."""
    if declared_flow_request == _NOTHING_ASKED and all(getattr(body, f) is None for f in _FIELDS):
        return _DEFAULTS
    return FlowSettings.resolve(flow_request(body).over(declared_flow_request), input_data)
