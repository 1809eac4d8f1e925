"""The `abstractgateway` command: a thin click layer over the packages."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shared_store import Database, StoreError, StorePaths
from shared_store.migrate import migrate as apply_migrations
from shared_store.migrate import schema_status


def _db_path(data_dir: str | None, db: str | None) -> Path:
    return Path(db) if db else StorePaths.from_env(data_dir).db_path


@click.group()
@click.version_option(package_name="abstractgateway")
def main() -> None:
    """Durable HTTP control plane for abstractruntime workflow runs."""


@main.command()
@click.option("--data-dir", envvar="ABSTRACTGATEWAY_DATA_DIR", help="Data directory (db and artifacts).")
@click.option("--db", "db_file", help="Path of the SQLite file (default: DATA_DIR/gateway.sqlite3).")
@click.option("--status", "status_only", is_flag=True, help="Show the schema state; apply nothing.")
def migrate(data_dir: str | None, db_file: str | None, status_only: bool) -> None:
    """Apply pending schema migrations (in one transaction) to the gateway database."""
    path = _db_path(data_dir, db_file)
    try:
        db = Database(path)
        try:
            before = schema_status(db)
            if status_only:
                click.echo(f"{path}: schema version {before.current}, latest known {before.latest}")
                if before.pending:
                    click.echo(f"pending: {', '.join(map(str, before.pending))}")
                if before.modified:
                    click.echo(f"WARNING: applied migrations changed since: {before.modified}", err=True)
                return
            applied = apply_migrations(db)
        finally:
            db.close()
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if applied:
        click.echo(f"{path}: applied {', '.join(f'{v:04d}' for v in applied)}; schema version {applied[-1]}")
    else:
        click.echo(f"{path}: up to date at schema version {before.current}")


def _register_commands() -> None:
    # Each command module imports cheaply; the runtime / web stack loads when a command runs.
    from api_service.cli import serve
    from runner_service.cli import runner

    main.add_command(serve)
    main.add_command(runner)


_register_commands()

if __name__ == "__main__":
    main()
