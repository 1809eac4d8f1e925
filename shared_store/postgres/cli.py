"""The PostgreSQL side of `abstractgateway migrate` (abstractgateway/cli.py calls these with its options):
`--db-url URL` migrates that PostgreSQL database; with `--from=sqlite` it then copies the SQLite
gateway (--data-dir / --db) into it. Returns the process's exit status."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import StorePaths
from ..errors import StoreError


def postgres_migrate_command(
    db_url: str | None,
    *,
    from_backend: str | None,
    data_dir: str | None,
    db_file: str | None,
    status_only: bool,
) -> int:
    if not db_url:
        raise click.UsageError("--from=sqlite needs --db-url postgresql://... (the database to copy into)")
    if not db_url.startswith(("postgresql://", "postgres://")):
        # Not a libpq keyword string either: name the expected form instead of libpq's parse error.
        raise click.UsageError(f"--db-url must be a postgresql:// URL, not {db_url.split(':', 1)[0]!r}...")
    import psycopg

    from .migrate import migrate, schema_status
    from .sqlite_copy import copy_sqlite_to_postgres

    shown = _redacted(db_url)
    try:
        if status_only:
            with psycopg.connect(db_url) as conn:
                status = schema_status(conn)
            click.echo(f"{shown}: schema version {status.current}, latest known {status.latest}")
            if status.pending:
                click.echo(f"pending: {', '.join(map(str, status.pending))}")
            return 0
        if from_backend is None:
            applied = migrate(db_url)
            click.echo(
                f"{shown}: applied {', '.join(f'{v:04d}' for v in applied)}"
                if applied
                else f"{shown}: up to date"
            )
            return 0
        if from_backend != "sqlite":
            raise click.UsageError(f"--from={from_backend} cannot go to --db-url; use --from=sqlite")
        paths = StorePaths.from_env(data_dir)
        source = Path(db_file) if db_file else paths.db_path
        # A progress bar on a terminal; nothing on a pipe or in a log (CI, systemd, tests).
        progress = (
            (lambda total: click.progressbar(length=total, label="copying rows", file=sys.stderr))
            if sys.stderr.isatty()
            else None
        )
        # The artifact files where that gateway keeps them (as runner_service/cli.py lays them out).
        artifacts = source.parent / "artifacts" if db_file else paths.artifacts_dir
        summary = copy_sqlite_to_postgres(source, db_url, progress=progress, artifacts_dir=artifacts)
    except (StoreError, FileNotFoundError, ValueError, psycopg.Error) as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    click.echo(f"copied {source} into {shown}: {summary.inserted} rows inserted")
    click.echo("\n".join(summary.lines()))
    if not summary.ok:
        click.echo(f"error: row counts differ for {', '.join(summary.mismatched)}", err=True)
        return 1
    return 0


def _redacted(url: str) -> str:
    """The URL as libpq key=value text without its password (it goes to logs and terminals)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "<db-url>"
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})
