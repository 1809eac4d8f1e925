"""`abstractgateway runner`: the click command (cheap to import; the runtime loads when it runs)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import click


@click.command()
# Options left out fall back to the settings (ABSTRACTGATEWAY_*, runner_service/settings.py).
@click.option("--data-dir", help="Data directory (db and artifacts).")
@click.option("--db", "db_file", help="SQLite file (default DATA_DIR/gateway.sqlite3).")
@click.option(
    "--db-url",
    help="A postgresql:// URL: claim runs from the shared PostgreSQL (default $ABSTRACTGATEWAY_DB_URL; "
    "unset: the SQLite file).",
)
@click.option("--flows-dir", help="A .flow bundle, a VisualFlow .json, or a folder of them, to load.")
@click.option("--runner-id", help="Lease owner id (default host-pid-random).")
@click.option(
    "--lease-s", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Lease length."
)
@click.option(
    "--poll-s", type=click.FloatRange(min=0.001), default=0.05, show_default=True, help="Idle poll interval."
)
@click.option(
    "--workers", type=click.IntRange(min=1, max=64), default=1, show_default=True, help="Worker threads."
)
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Delete finished runs (ledgers, commands, child runs, artifacts) this long after they ended.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="A label this runner has (repeatable: --label gpu --label region=eu); runs requiring labels "
    "are claimed only by runners that have them all. Added to ABSTRACTGATEWAY_RUNNER_LABELS (comma-separated).",
)
@click.option("--migrate/--no-migrate", default=False, help="Apply pending migrations first.")
def runner(
    data_dir: str | None,
    db_file: str | None,
    db_url: str | None,
    flows_dir: str | None,
    runner_id: str | None,
    lease_s: float,
    poll_s: float,
    workers: int,
    retention_days: float | None,
    labels: tuple[str, ...],
    migrate: bool,
) -> None:
    """Claim due runs by lease, apply their commands, tick them with abstractruntime (SIGTERM: stop)."""

    # A runner started by `serve` inherits the API's multiprocess metrics directory: its own metrics
    # are published through the store instead (runner_service/metrics.py), never mixed into the API's.
    # (PROMETHEUS_MULTIPROC_DIR is prometheus_client's variable, not a setting of ours.)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from shared_store import StoreError, StorePaths, connect_store, require_current
    from shared_store.artifact_store import SqliteArtifactStore
    from shared_store.capability_defaults import default_for
    from shared_store.flow_control import FlowControlError, parse_labels
    from shared_store.logs import configure_logging
    from shared_store.migrate import create_schema_if_new
    from shared_store.migrate import migrate as apply_migrations
    from shared_store.settings import postgres_url

    from . import settings as runner_settings
    from .daemon import Runner, RunnerSettings
    from .llm import LLMHandlers, LLMSettings, llm_effect_handlers

    try:  # the environment is read here, once: a bad value stops the runner with the reason
        # --data-dir wins for everything under it (kg, prompt caches), not only the db.
        given = {"data_dir": Path(data_dir).expanduser()} if data_dir else {}
        config = runner_settings.RunnerConfig.from_env(None, **given)
        runner_labels = parse_labels([*config.runner_labels, *labels])
    except (FlowControlError, runner_settings.SettingsError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    runner_settings.install(config)
    configure_logging(config.log_level)
    paths = StorePaths.from_settings(config, data_dir)
    if db_url:
        try:
            paths = replace(paths, db_url=postgres_url(db_url))
        except ValueError as exc:
            click.echo(f"error: --db-url {exc}", err=True)
            sys.exit(2)
    db_file = db_file or (str(config.db_path) if config.db_path else None)
    if paths.db_url and db_file:
        click.echo("error: give the store once: --db-url / ABSTRACTGATEWAY_DB_URL or --db", err=True)
        sys.exit(2)
    flows_dir = flows_dir or (str(config.flows_dir) if config.flows_dir else None)
    db_path = Path(db_file) if db_file else paths.db_path
    try:
        db = connect_store(paths.db_url or db_path, data_dir=paths.data_dir)
        try:
            # A new db file gets the whole schema; an existing one is migrated only when asked.
            if migrate:
                apply_migrations(db)
            else:
                create_schema_if_new(db)
            require_current(db)
        finally:
            db.close()
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    settings = RunnerSettings(
        db_path=db_path,
        db_url=paths.db_url,
        data_dir=paths.data_dir,
        artifacts_dir=paths.artifacts_dir if not db_file else db_path.parent / "artifacts",
        flows_dir=Path(flows_dir) if flows_dir else None,
        lease_s=lease_s,
        poll_s=poll_s,
        workers=workers,
        retention_days=retention_days if retention_days is not None else config.retention_days,
        labels=runner_labels,
        tick_timeout_s=config.tick_timeout_s,
    )
    if runner_id or config.runner_id:
        settings.runner_id = runner_id or str(config.runner_id)
    llm = LLMSettings.from_config(config)

    def handlers(artifacts: SqliteArtifactStore) -> LLMHandlers:
        # The output.text default is read from the db on every call: a change reaches running runners.
        text_default = lambda: default_for(artifacts.db, "output.text")  # noqa: E731
        return llm_effect_handlers(llm, artifact_store=artifacts, defaults=text_default)

    sys.exit(Runner(settings, effect_handlers=handlers).run())
