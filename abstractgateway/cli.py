"""The `abstractgateway` command: a thin click layer over the packages."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
    from shared_store.settings import SettingsError, SharedSettings, read_one

    try:
        # Refuse rather than ignore: a deployment naming a store that is not PostgreSQL must not run
        # on the SQLite file instead.
        read_one(SharedSettings, "db_url")
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option(
    "--data-dir",
    help="Data directory (db and artifacts; default $ABSTRACTGATEWAY_DATA_DIR or ./data); with "
    "--from=file, the file backend's dir to import.",
)
@click.option("--db", "db_file", help="Path of the SQLite file (default: DATA_DIR/gateway.sqlite3).")
@click.option("--status", "status_only", is_flag=True, help="Show the schema state; apply nothing.")
@click.option(
    "--from",
    "from_backend",
    type=click.Choice(["file", "sqlite"]),
    help="Import the original gateway's file-backend data dir, given as --data-dir D; or, with "
    "--db-url, copy this SQLite gateway into PostgreSQL.",
)
@click.option(
    "--db-url",
    help="A postgresql:// URL: migrate that database (and copy into it with --from=sqlite); default "
    "$ABSTRACTGATEWAY_DB_URL.",
)
@click.option(
    "--to",
    "to_backend",
    type=click.Choice(["sqlite"]),
    default="sqlite",
    show_default=True,
    help="Import into.",
)
@click.option(
    "--to-data-dir",
    help="With --from: the gateway data dir to import into (default: $ABSTRACTGATEWAY_DATA_DIR or ./data).",
)
@click.option(
    "--enable-incremental-vacuum",
    is_flag=True,
    help="Also switch a db created before retention existed to auto_vacuum=INCREMENTAL (a full VACUUM: "
    "stop the gateway first), so retention returns freed pages to the OS.",
)
def migrate(
    data_dir: str | None,
    db_file: str | None,
    status_only: bool,
    from_backend: str | None,
    to_backend: str,
    to_data_dir: str | None,
    enable_incremental_vacuum: bool,
    db_url: str | None,
) -> None:
    """Apply pending schema migrations (in one transaction) to the gateway database.

    With --from=file --data-dir D: migrate the target db, then import D (runs, ledgers, commands,
    artifacts of the file backend) into it, idempotently, and verify the counts (exit 1 if they differ).
    """
    if not db_url and (from_backend == "sqlite" or (from_backend is None and not db_file)):
        from shared_store.settings import SharedSettings, read_one

        db_url = read_one(SharedSettings, "db_url")  # ABSTRACTGATEWAY_DB_URL (checked by the group)
    if db_url or from_backend == "sqlite":
        from shared_store.postgres.cli import postgres_migrate_command

        sys.exit(
            postgres_migrate_command(
                db_url, from_backend=from_backend, data_dir=data_dir, db_file=db_file, status_only=status_only
            )
        )
    if from_backend:
        sys.exit(_import_file_store(data_dir, to_data_dir, db_file))
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
            if enable_incremental_vacuum:
                from shared_store.retention import enable_incremental_vacuum as vacuum

                vacuum(db)
                click.echo(f"{path}: auto_vacuum=INCREMENTAL (vacuumed)")
        finally:
            db.close()
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if applied:
        click.echo(f"{path}: applied {', '.join(f'{v:04d}' for v in applied)}; schema version {applied[-1]}")
    else:
        click.echo(f"{path}: up to date at schema version {before.current}")


def _import_file_store(source: str | None, to_data_dir: str | None, db_file: str | None) -> int:
    from shared_store.file_import import import_file_store

    # The env's ABSTRACTGATEWAY_DATA_DIR is our own data dir: the source must be named explicitly.
    if not source:
        raise click.UsageError("--from=file needs --data-dir D: the file backend's data dir to import")
    paths = StorePaths.from_env(to_data_dir)
    db_path = Path(db_file) if db_file else paths.db_path
    artifacts = db_path.parent / "artifacts" if db_file else paths.artifacts_dir
    # Both lay out an artifacts/ folder: sharing one dir would mix the two stores' files.
    if Path(source).resolve() in (paths.data_dir.resolve(), db_path.parent.resolve()):
        raise click.UsageError(
            "the gateway's data dir must differ from the file backend's: pass --to-data-dir"
        )
    try:
        db = Database(db_path)
        try:
            apply_migrations(db)
            bar = lambda total: click.progressbar(length=total, label="importing runs", file=sys.stderr)  # noqa: E731
            summary = import_file_store(db, source, artifacts_dir=artifacts, progress=bar)
        finally:
            db.close()
    except (StoreError, FileNotFoundError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    click.echo(f"imported {source} into {db_path} (artifacts in {artifacts})")
    click.echo("\n".join(summary.lines()))
    return 0 if summary.ok else 1


def _checking_runner_settings(serve: click.Command) -> click.Command:
    """`serve` that also refuses, before it starts, settings its runner child would refuse (the API
    side never imports the runner's declarations; this package may): exit 2 naming the variable,
    rather than a runner restarted in a loop."""
    import copy

    checked = copy.copy(serve)
    inner = serve.callback
    assert inner is not None

    def callback(**options: Any) -> Any:
        if not options.get("no_runner"):
            from runner_service.settings import RunnerConfig, SettingsError

            try:
                RunnerConfig.from_env()
            except SettingsError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
        return inner(**options)

    checked.callback = callback
    return checked


def _register_commands() -> None:
    # Each command module imports cheaply; the runtime / web stack loads when a command runs.
    from api_service.cli import serve
    from runner_service.cli import runner

    from .config_cli import config
    from .sample_flows import flows

    main.add_command(_checking_runner_settings(serve))
    main.add_command(runner)
    main.add_command(config)
    main.add_command(flows)


_register_commands()

if __name__ == "__main__":
    main()
