"""Where the gateway keeps its data, read from the environment (ABSTRACTGATEWAY_*)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DB_FILENAME = "gateway.sqlite3"


@dataclass(frozen=True)
class StorePaths:
    data_dir: Path
    db_path: Path
    artifacts_dir: Path

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike[str] | None = None) -> StorePaths:
        root = Path(data_dir or os.environ.get("ABSTRACTGATEWAY_DATA_DIR") or "data").expanduser()
        db = os.environ.get("ABSTRACTGATEWAY_DB_PATH")
        return cls(
            data_dir=root,
            db_path=Path(db).expanduser() if db else root / DB_FILENAME,
            artifacts_dir=root / "artifacts",
        )
