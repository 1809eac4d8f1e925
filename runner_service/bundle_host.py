"""Compiled workflows for ONE worker thread: a compiled VisualFlow spec is not thread-safe.

Specs are compiled from the bundles stored in the db (uploads and flows-dir imports alike), named
`bundle@version:flow`, and kept for the life of the worker: a run started on a version keeps its
compiled flow even when the version is later overwritten or removed.

A host routes what it compiles through the gateway's confinement first (`sandbox.install`: code
nodes and flow functions run in the sandbox process; `workspace.install`: file effects stay in the
run's workspace). Under ABSTRACTGATEWAY_CODE_NODES=off a flow holding code does not compile: the
reason is recorded and reported like any compile error, and no run of it starts.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.visualflow_compiler import compile_visualflow

from shared_store import Database
from shared_store.bundle_code import CODE_NODES_ENV, code_locations
from shared_store.bundle_files import BundleError, read_bundle
from shared_store.bundles import compile_source

from . import sandbox, workspace


class WorkflowUnavailable(LookupError):
    """A workflow a run needs cannot be had: unknown bundle/flow or a flow that does not compile."""


def split_workflow_id(workflow_id: str) -> tuple[str, str, str]:
    """('bundle', 'version', 'flow') of 'bundle@version:flow'."""
    ref, sep, flow_id = workflow_id.rpartition(":")
    bundle_id, at, version = ref.partition("@")
    if not (sep and at and bundle_id and version and flow_id):
        raise WorkflowUnavailable(f"workflow id {workflow_id!r} is not 'bundle@version:flow'")
    return bundle_id, version, flow_id


class BundleHost:
    """Per-thread cache of compiled bundles; also the runtime's workflow registry (`get`)."""

    def __init__(self, db: Database, sandbox_settings: sandbox.SandboxSettings | None = None) -> None:
        self.db = db
        self.sandbox = sandbox_settings or sandbox.SandboxSettings.from_env()
        sandbox.install(self.sandbox)
        workspace.install()
        self._thread = threading.get_ident()
        self._bundles: dict[str, dict[str, WorkflowSpec | str]] = {}  # ref -> flow -> spec | error
        self.sha256: dict[str, str] = {}
        # The VisualFlow JSON of each flow compiled here (ref -> flow -> document): a run's snapshot.
        self.documents: dict[str, dict[str, dict[str, Any]]] = {}
        self.current_ref: str | None = None  # the bundle of the run being ticked (bare subflow ids)

    def spec(self, workflow_id: str) -> WorkflowSpec:
        """The compiled workflow; raises WorkflowUnavailable with the reason."""
        if threading.get_ident() != self._thread:
            raise RuntimeError("a BundleHost belongs to the thread that made it (specs are not thread-safe)")
        bundle_id, version, flow_id = split_workflow_id(workflow_id)
        ref = f"{bundle_id}@{version}"
        self.current_ref = ref
        flows = self._bundles.get(ref)
        if flows is None:
            flows = self._compile(bundle_id, version)
            self._bundles[ref] = flows
        found = flows.get(flow_id)
        if found is None:
            raise WorkflowUnavailable(f"bundle {ref} has no flow {flow_id!r}; flows: {', '.join(flows)}")
        if isinstance(found, str):
            raise WorkflowUnavailable(found)
        return found

    def get(self, workflow_id: str) -> WorkflowSpec | None:
        """Registry lookup for subworkflows: a full id, or a flow id of the current run's bundle."""
        candidates = [workflow_id]
        if self.current_ref and "@" not in workflow_id:
            candidates.insert(0, f"{self.current_ref}:{workflow_id}")
        for candidate in candidates:
            try:
                return self.spec(candidate)
            except WorkflowUnavailable:
                continue
        return None

    def document(self, workflow_id: str) -> dict[str, Any] | None:
        """The VisualFlow JSON a compiled workflow came from (after spec() compiled its bundle)."""
        bundle_id, version, flow_id = split_workflow_id(workflow_id)
        return self.documents.get(f"{bundle_id}@{version}", {}).get(flow_id)

    def compile_errors(self, bundle_id: str, version: str) -> dict[str, str]:
        """flow_id -> reason for the flows of a bundle that do not compile."""
        ref = f"{bundle_id}@{version}"
        if ref not in self._bundles:
            self._bundles[ref] = self._compile(bundle_id, version)
        flows = self._bundles[ref]
        return {flow_id: found for flow_id, found in flows.items() if isinstance(found, str)}

    def _compile(self, bundle_id: str, version: str) -> dict[str, WorkflowSpec | str]:
        ref = f"{bundle_id}@{version}"
        source = compile_source(self.db, bundle_id, version)
        if source is None:
            raise WorkflowUnavailable(f"Bundle '{ref}' not found")
        content, self.sha256[ref] = source
        try:
            _, documents = read_bundle(content)
        except BundleError as exc:
            raise WorkflowUnavailable(f"bundle {ref}: {exc.detail}") from None
        self.documents[ref] = documents
        flows: dict[str, WorkflowSpec | str] = {}
        for flow_id, document in documents.items():
            code = code_locations(flow_id, document) if self.sandbox.mode == "off" else []
            if code:
                flows[flow_id] = (
                    f"flow {ref}:{flow_id} holds code and {CODE_NODES_ENV}=off: {'; '.join(code)}"
                )
            else:
                flows[flow_id] = _compiled(ref, flow_id, document)
        return flows


def _compiled(ref: str, flow_id: str, document: dict[str, Any]) -> WorkflowSpec | str:
    try:
        spec = compile_visualflow(document)
    except Exception as exc:  # the compiler raises many kinds; each is a reason to report
        return f"flow {ref}:{flow_id} does not compile: {type(exc).__name__}: {exc}"
    return dataclasses.replace(spec, workflow_id=f"{ref}:{flow_id}")
