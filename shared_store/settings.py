"""Every ABSTRACTGATEWAY_* setting, declared once: a dataclass field whose metadata holds its env name,
parser, bounds, section and one-line doc.

Each process has one frozen settings object, read from the environment once at start-up (`load`) and
passed down: `SharedSettings` (here: what the API, the runner and the CLI all read), `ApiSettings`
(api_service/settings.py) and `RunnerConfig` (runner_service/settings.py) extend it. A value that does
not parse, or is out of bounds, raises `SettingsError` naming the variable; the CLIs turn it into
`error: ...` and exit 2. deploy/systemd/abstractgateway.env.example and `config init`'s file are
rendered from these declarations (`render_env`), never kept by hand.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PREFIX = "ABSTRACTGATEWAY_"

# The env example's sections, in order (a field names one of these).
SECTIONS = {
    "store": "where the data lives (API, runner, migrate)",
    "serve": "the API (abstractgateway serve)",
    "runner": "the runner (abstractgateway runner)",
    "llm": "LLM (runner)",
    "sandbox": "code nodes (runner; the API refuses code at upload when off)",
    "media": "media and knowledge graph (models are local, nothing downloads)",
    "ops": "operations (runner)",
}


class SettingsError(ValueError):
    """An ABSTRACTGATEWAY_* variable has a value this process cannot use (the message names it)."""


@dataclass(frozen=True)
class Env:
    """A field's declaration: which variable sets it and how its text is read."""

    name: str  # without the prefix: MAX_BODY_BYTES
    doc: str
    section: str
    parse: Callable[[str], Any]
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive lower bound (> above)
    secret: bool = False
    example: str | None = None  # shown in the env example instead of the default
    active: bool = False  # an uncommented line in the env example (systemd / docker set it)

    @property
    def var(self) -> str:
        return PREFIX + self.name

    def read(self, raw: str) -> Any:
        try:
            value = self.parse(raw)
        except ValueError as exc:
            reason = str(exc)  # ours read "must be ..."; a library's (ipaddress) stands after a colon
            raise SettingsError(
                f"{self.var} {reason}" if reason.startswith("must") else f"{self.var}: {reason}"
            ) from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise SettingsError(f"{self.var} must be >= {_show(self.minimum)}, not {raw!r}")
            if self.above is not None and not value > self.above:
                raise SettingsError(f"{self.var} must be > {_show(self.above)}, not {raw!r}")
            if self.maximum is not None and value > self.maximum:
                raise SettingsError(f"{self.var} must be <= {_show(self.maximum)}, not {raw!r}")
        return value


# --- parsers: text -> value (ValueError with the reason; the loader names the variable) ---------------
def whole(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, not {raw!r}") from None


def number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, not {raw!r}")
    return value


def text(raw: str) -> str:
    return raw


def path(raw: str) -> Path:
    return Path(raw).expanduser()


def flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("0", "false", "no", "off"):
        return False
    if lowered in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"must be 1 or 0 (true / false), not {raw!r}")


def items(raw: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in raw.split(",") if v.strip())


def networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in items(raw))
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def postgres_url(raw: str) -> str:
    """A PostgreSQL connection URL (what `--db-url` takes); anything else is refused, not guessed."""
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql://user:password@host:port/dbname URL")
    return raw


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, not {raw!r}")
        return value

    return parse


def setting(
    name: str,
    default: Any,
    doc: str,
    *,
    section: str,
    parse: Callable[[str], Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    secret: bool = False,
    example: str | None = None,
    active: bool = False,
) -> Any:
    """A dataclass field set by ABSTRACTGATEWAY_<name> (its parser follows the default's type)."""
    if parse is None:
        parse = _parser_for(default)
    assert section in SECTIONS, section
    env = Env(name, doc, section, parse, default, minimum, maximum, above, secret, example, active)
    metadata = {"env": env}
    if isinstance(default, Mapping):  # a fresh (empty) mapping per object
        return field(default_factory=lambda: dict(default), metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


def _parser_for(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return flag
    if isinstance(default, int):
        return whole
    if isinstance(default, float):
        return number
    if isinstance(default, Path):
        return path
    if isinstance(default, tuple):
        return items
    if isinstance(default, str):
        return text
    raise TypeError(f"give a parser for a default of {default!r}")


# --- the settings every process reads ------------------------------------------------------------------
@dataclass(frozen=True)
class SharedSettings:
    data_dir: Path = setting(
        "DATA_DIR", Path("data"), "data directory: the SQLite db (gateway.sqlite3) and artifacts/",
        section="store", example="/var/lib/abstractgateway",
    )  # fmt: skip
    db_path: Path | None = setting(
        "DB_PATH", None, "the SQLite file, when not DATA_DIR/gateway.sqlite3 (a local disk: WAL)",
        section="store", parse=path, example="/var/lib/abstractgateway/gateway.sqlite3",
    )  # fmt: skip
    flows_dir: Path | None = setting(
        "FLOWS_DIR", None, "a .flow bundle, a VisualFlow .json, or a folder of them, imported at start",
        section="store", parse=path, example="/opt/abstractgateway/flows",
    )  # fmt: skip
    db_url: str | None = setting(
        "DB_URL", None,
        "a postgresql:// URL: the shared PostgreSQL store of API and runner hosts (unset: the SQLite file)",
        section="store", parse=postgres_url, example="postgresql://gateway:SECRET@db.internal:5432/gateway",
    )  # fmt: skip
    # A process keeps one connection per thread that touches the store: the API up to its 32 read
    # threads, its writer and SSE hub; a runner its workers and maintenance threads. Size the
    # server's max_connections for (API hosts + runner hosts) x this.
    pg_pool_max: int = setting(
        "PG_POOL_MAX", 40, "PostgreSQL connections one process may hold (more threads wait, then 503)",
        section="store", minimum=2, maximum=1000,
    )  # fmt: skip
    # Behind a transaction-pooling proxy (PgBouncer pool_mode=transaction) LISTEN receives nothing (a
    # listener waited out its timeout: commit -> SSE 1.5 s) and server-side prepared statements break
    # (3 of 60 queries failed). Direct connections keep both: prepared claims ran ~1.7x faster.
    pg_transaction_pooler: bool = setting(
        "PG_TRANSACTION_POOLER", False,
        "PostgreSQL behind a transaction-pooling proxy (PgBouncer): no LISTEN (SSE polls), no prepared statements",
        section="store", parse=flag,
    )  # fmt: skip
    log_level: str = setting(
        "LOG_LEVEL", "info", "log level of both processes (JSON lines on stderr; debug adds claims)",
        section="store", parse=choice("debug", "info", "warning", "error"),
    )  # fmt: skip
    max_input_bytes: int = setting(
        "MAX_INPUT_BYTES", 1024 * 1024, "largest run input_data, JSON-encoded, in bytes (413 above)",
        section="store", minimum=1,
    )  # fmt: skip
    # 200 starts with a 5 MB input once grew a db by 9.9 GB: both caps sit well under the body cap.
    max_output_bytes: int = setting(
        "MAX_OUTPUT_BYTES", 4 * 1024 * 1024,
        "largest run/node output or ledger record the runner stores, JSON, in bytes (the run fails above)",
        section="store", minimum=1,
    )  # fmt: skip
    code_nodes: str = setting(
        "CODE_NODES", "sandbox",
        "sandbox: code nodes run in the runner's sandbox | off: bundles with code refused at upload",
        section="sandbox", parse=choice("sandbox", "off"),
    )  # fmt: skip

    @property
    def store_db_path(self) -> Path:
        return self.db_path if self.db_path is not None else self.data_dir / "gateway.sqlite3"


S = TypeVar("S")


def env_fields(cls: type) -> list[tuple[str, Env]]:
    """(field name, declaration) of every env-set field of a settings dataclass, in order."""
    return [(f.name, f.metadata["env"]) for f in dataclasses.fields(cls) if "env" in f.metadata]


def ours(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ABSTRACTGATEWAY_* variables of `env` (the process environment by default)."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if k.startswith(PREFIX)}


def read_values(cls: type, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each env-set field's value (its default where the variable is unset or blank)."""
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, declared in env_fields(cls):
        raw = source.get(declared.var, "").strip()
        if raw:
            values[name] = declared.read(raw)
    return values


def load(cls: type[S], env: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """`cls` from the environment (or `env`); `overrides` (CLI flags, tests) win."""
    return cls(**{**read_values(cls, env), **overrides})


def read_one(cls: type, field_name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting of `cls` (for a process that needs only that one, e.g. the store backend check)."""
    for name, declared in env_fields(cls):
        if name == field_name:
            raw = (os.environ if env is None else env).get(declared.var, "").strip()
            return declared.read(raw) if raw else declared.default
    raise KeyError(field_name)


def declarations(classes: Iterable[type]) -> dict[str, Env]:
    """Every declared variable (short name -> declaration), each once, in declaration order."""
    out: dict[str, Env] = {}
    for cls in classes:
        for _, declared in env_fields(cls):
            out.setdefault(declared.name, declared)
    return out


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(dict(value)) if value else ""
    return str(value)


def render_env(
    classes: Iterable[type], header: Iterable[str], values: Mapping[str, str] | None = None
) -> str:
    """An env file of every declared setting, grouped by section: `# doc` then `# VAR=default`
    (or `VAR=value`, uncommented, for a value given in `values` or a setting declared active)."""
    chosen = values or {}
    declared = declarations(classes)
    lines = [*header]
    for section, title in SECTIONS.items():
        members = [env for env in declared.values() if env.section == section]
        if not members:
            continue
        lines += ["", f"# --- {title} " + "-" * max(3, 96 - len(title))]
        for env in members:
            default = env.default
            lines.append(f"# {env.doc}")
            if env.name in chosen:
                lines.append(f"{env.var}={chosen[env.name]}")
            elif env.active:
                lines.append(f"{env.var}={'' if env.secret else _show(default)}")
            else:
                shown = env.example if env.example is not None else _show(default)
                lines.append(f"# {env.var}={shown}")
    return "\n".join(lines) + "\n"
