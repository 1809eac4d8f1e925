"""Where the gateway keeps its data: the data dir, the db file and the artifacts beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .settings import SharedSettings, read_one

DB_FILENAME = "gateway.sqlite3"


@dataclass(frozen=True)
class StorePaths:
    data_dir: Path
    db_path: Path
    artifacts_dir: Path

    @classmethod
    def from_settings(
        cls, settings: SharedSettings, data_dir: str | os.PathLike[str] | None = None
    ) -> StorePaths:
        """The process's settings' paths; `data_dir` (a CLI flag) wins over ABSTRACTGATEWAY_DATA_DIR."""
        return cls._at(Path(data_dir).expanduser() if data_dir else settings.data_dir, settings.db_path)

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike[str] | None = None) -> StorePaths:
        """For commands that need only the paths (migrate, config): DATA_DIR and DB_PATH alone."""
        root = Path(data_dir).expanduser() if data_dir else read_one(SharedSettings, "data_dir")
        return cls._at(root, read_one(SharedSettings, "db_path"))

    @classmethod
    def _at(cls, root: Path, db: Path | None) -> StorePaths:
        return cls(data_dir=root, db_path=db or root / DB_FILENAME, artifacts_dir=root / "artifacts")
