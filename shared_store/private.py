"""Files and folders the gateway creates are its own: folders 0700, files 0600 (db, WAL/SHM,
artifact blobs). Code a runner executes runs as another user (runner_service/sandbox), so these
modes are what keeps the db and every run's artifacts out of its reach; they also keep other local
users out. Existing folders the gateway did not create (a data dir the operator made) are left as
they are."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """mkdir -p, every folder it creates 0700 (Path.mkdir gives the parents the default mode)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 when absent; drop group/other bits when it is ours (an
    owner's read-only mode stays read-only). SQLite gives the -wal and -shm files the mode of the db
    file, so this covers them too. A failure is left to the opener to report."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        info = path.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            path.chmod(info.st_mode & 0o700)
