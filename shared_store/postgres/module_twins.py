"""PostgreSQL twins of statements kept beside the modules that run them (not in queries.py)."""

from __future__ import annotations


def register_all() -> None:
    """Nothing yet beyond queries.py's twins: each module's statements respell mechanically."""
