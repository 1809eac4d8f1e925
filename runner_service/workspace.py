"""Every run works in a folder the gateway chooses: DATA_DIR/workspaces/<run id> (0700).

abstractruntime's file nodes (read_file, write_file, read_pdf, write_pdf, write_docx, write_chart,
list_folder_files, import_workspace_file, export_artifact) and its workspace-scoped tools resolve
paths through `WorkspaceScope.from_input_data(<node inputs>)`, looked up in its module when they run.
`install()` binds the gateway's version there: whatever the node inputs or the run's vars say
(workspace_root, access modes, allowed paths — a flow or a client could set any of them), the scope
is the run's own folder in `workspace_only` mode, so `..`, absolute paths out and symlinks out are
refused by abstractruntime's own resolver (which follows links before checking). Outside a run
there is no workspace and every file effect is refused.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from abstractruntime.integrations.abstractcore import workspace_scoped_tools

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_current = threading.local()


def workspace_dir(root: Path, run_id: str) -> Path:
    """The run's folder under `root` (a hash for an id that is not a plain file name)."""
    name = run_id if _SAFE_ID.match(run_id) else hashlib.sha256(run_id.encode()).hexdigest()
    return root / name


def strip_client_keys(input_data: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """A run's starting vars: the client's workspace keys dropped, the gateway's workspace_root set."""
    kept = {k: v for k, v in input_data.items() if not k.lower().startswith("workspace")}
    kept["workspace_root"] = str(workspace)
    return kept


@contextmanager
def run_workspace(root: Path, run_id: str) -> Iterator[Path]:
    """While a worker handles `run_id`, file effects in this thread resolve inside its folder."""
    path = workspace_dir(root, run_id)
    previous = getattr(_current, "path", None)
    _current.path = path
    try:
        yield path
    finally:
        _current.path = previous


def _confined_scope(cls: type, input_data: dict[str, Any], **_: Any) -> Any:
    path: Path | None = getattr(_current, "path", None)
    if path is None:
        raise ValueError("file effects run only inside a run's workspace")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    return cls(root=path.resolve(), access_mode="workspace_only")


def install() -> None:
    """Make every workspace scope in this process the current run's own folder (idempotent)."""
    scope = workspace_scoped_tools.WorkspaceScope
    scope.from_input_data = classmethod(_confined_scope)
