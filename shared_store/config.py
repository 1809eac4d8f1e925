"""Where the gateway keeps its data: the data dir, the db (the SQLite file, or the PostgreSQL URL) and
the artifacts."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .settings import SharedSettings, read_one

DB_FILENAME = "gateway.sqlite3"


@dataclass(frozen=True)
class StorePaths:
    data_dir: Path
    db_path: Path
    artifacts_dir: Path
    # The shared PostgreSQL (ABSTRACTGATEWAY_DB_URL / --db-url); None: the SQLite file at db_path.
    db_url: str | None = None

    @property
    def db_target(self) -> str:
        """What connect_store opens: the URL when one is set, else the SQLite file's path."""
        return self.db_url or str(self.db_path)

    @classmethod
    def from_settings(
        cls, settings: SharedSettings, data_dir: str | os.PathLike[str] | None = None
    ) -> StorePaths:
        """The process's settings' paths; `data_dir` (a CLI flag) wins over ABSTRACTGATEWAY_DATA_DIR."""
        paths = cls._at(Path(data_dir).expanduser() if data_dir else settings.data_dir, settings.db_path)
        return replace(paths, db_url=settings.db_url)

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike[str] | None = None) -> StorePaths:
        """For commands that need only the paths (migrate, config): DATA_DIR and DB_PATH alone."""
        root = Path(data_dir).expanduser() if data_dir else read_one(SharedSettings, "data_dir")
        paths = cls._at(root, read_one(SharedSettings, "db_path"))
        return replace(paths, db_url=read_one(SharedSettings, "db_url"))

    @classmethod
    def _at(cls, root: Path, db: Path | None) -> StorePaths:
        return cls(data_dir=root, db_path=db or root / DB_FILENAME, artifacts_dir=root / "artifacts")
