"""A start's or a schedule's flow-control fields, merged over what its bundle declares."""

from __future__ import annotations

from typing import Any

from shared_store import bundles
from shared_store.db import Database
from shared_store.flow_control import FlowRequest, FlowSettings, declared_flow
from shared_store.reads import bundle_manifest

from .schemas import FlowControlFields


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


def declared_and_requested(
    db: Database, body: FlowControlFields, resolved: bundles.ResolvedWorkflow
) -> FlowRequest:
    """The request's fields over the bundle's declaration (a bad declaration is the bundle's 422).

    The manifest alone, by primary key: get_bundle (what resolve_workflow just used) also reads every
    deprecation and compile check and decodes every version's manifest, ~60-100 us per start again."""
    manifest = bundle_manifest(db, resolved.bundle_id, resolved.bundle_version)
    if manifest is None:  # resolved in this same transaction: gone only if removed meanwhile
        raise bundles.UnknownBundle(f"Bundle '{resolved.bundle_id}@{resolved.bundle_version}' not found")
    return flow_request(body).over(declared_flow(manifest, resolved.flow_id))


def flow_settings(
    db: Database, body: FlowControlFields, resolved: bundles.ResolvedWorkflow, input_data: dict[str, Any]
) -> FlowSettings:
    """Resolved for one run: the key rendered over its input (FlowControlError: 422)."""
    return FlowSettings.resolve(declared_and_requested(db, body, resolved), input_data)
