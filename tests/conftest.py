"""Shared fixtures: a migrated db file, the sample flows, compiled specs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


def flows_dir() -> Path:
    """ABSTRACTGATEWAY_FLOWS_DIR when set, else the repository's own samples (built if stale)."""
    configured = os.environ.get("ABSTRACTGATEWAY_FLOWS_DIR")
    if configured:
        return Path(configured)
    from abstractgateway.sample_flows import ensure_built

    return ensure_built()


@pytest.fixture(scope="session")
def flows() -> Path:
    path = flows_dir()
    if not any(path.glob("*.flow")):
        pytest.fail(f"sample flows not found in {path} (set ABSTRACTGATEWAY_FLOWS_DIR)")
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.sqlite3"


@pytest.fixture
def db(db_path: Path) -> Iterator[object]:
    from shared_store import Database, migrate

    database = Database(db_path)
    migrate(database)
    yield database
    database.close()


def load_spec(flows: Path, bundle: str):
    """Compile a sample bundle's default entrypoint, namespaced bundle@version:flow."""
    from abstractruntime.visualflow_compiler import compile_visualflow
    from abstractruntime.workflow_bundle import open_workflow_bundle

    opened = open_workflow_bundle(flows / f"{bundle}.flow")
    manifest = opened.manifest
    flow_id = manifest.default_entrypoint
    spec = compile_visualflow(opened.read_json(manifest.flows[flow_id]))
    return dataclasses.replace(spec, workflow_id=f"{manifest.bundle_id}@{manifest.bundle_version}:{flow_id}")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where CUDA is usable (the GPU extra); elsewhere they skip, saying why."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False on this machine)")
    for item in gpu_items:
        item.add_marker(skip)
