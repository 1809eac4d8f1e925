"""deploy/docker/compose.postgres.yml (profile `postgres`): parsed and checked against the code it runs.

Docker is not needed: the YAML is read here; each service's command is checked against the CLI's real
`--help`; the URL every gateway service gets is parsed by libpq and must name the `postgres` service's
user, database and port; the Dockerfile's EXTRAS expansion is run by a real shell; the variables it
sets must be declared settings. Where docker-compose is installed its `config` validates the file;
where PostgreSQL can be started (tests/pg) the services' commands and healthchecks run for real
against it: migrate, two API replicas and a runner, with the environment the compose file gives them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.polling import wait_for
from tests.pg.fixtures import PgDatabase

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
COMPOSE_PG = DOCKER / "compose.postgres.yml"
COMPOSE = DOCKER / "compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "systemd" / "abstractgateway.env.example"
GATEWAY_SERVICES = ("migrate", "import-sqlite", "api-1", "api-2", "runner", "runner-gpu")
PASSWORD = "0123456789abcdef"  # what an operator's .env would give POSTGRES_PASSWORD


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML is not installed (abstractruntime usually brings it)")


@cache
def _compose_raw() -> dict[str, Any]:
    return dict(_yaml().safe_load(COMPOSE_PG.read_text()))


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} in every string of the file."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env and (env[name] or op is None):
            return env[name]
        if op == ":?":
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return arg or ""

    if isinstance(value, str):
        return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


def _services(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    return dict(
        _interpolate(_compose_raw()["services"], {"POSTGRES_PASSWORD": PASSWORD} if env is None else env)
    )


@cache
def _help(sub: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "abstractgateway", sub, "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- the file ------------------------------------------------------------------------------------------
def test_profiles_name_the_postgres_deployment() -> None:
    services = _services()
    profiles = {name: service.get("profiles") for name, service in services.items()}
    assert profiles == {
        "postgres": ["postgres"],
        "migrate": ["postgres"],
        "import-sqlite": ["import-sqlite"],  # by hand: `run --rm import-sqlite`
        "api-1": ["postgres"],
        "api-2": ["postgres"],
        "runner": ["postgres"],
        "runner-gpu": ["gpu"],
    }
    # Nothing starts without a profile, so this file never starts a SQLite gateway by accident.
    assert all(profiles.values())
    assert _compose_raw()["name"] != _yaml().safe_load(COMPOSE.read_text())["name"]


def test_postgres_service_is_15_with_a_healthcheck_and_a_volume() -> None:
    compose = _compose_raw()
    pg = _services()["postgres"]
    assert pg["image"] == "postgres:15"
    test = pg["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    env = pg["environment"]
    assert (
        test[test.index("-U") + 1] == env["POSTGRES_USER"]
        and test[test.index("-d") + 1] == env["POSTGRES_DB"]
    )
    assert env["POSTGRES_PASSWORD"] == PASSWORD
    (volume,) = [v.split(":")[0] for v in pg["volumes"] if v.endswith(":/var/lib/postgresql/data")]
    assert volume in compose["volumes"]
    settings = dict(arg.split("=", 1) for arg in pg["command"][1:] if "=" in arg)
    assert pg["command"][0] == "postgres"
    # A client cut off inside a transaction would hold its rows and the change feed for ever.
    assert settings["idle_in_transaction_session_timeout"] not in ("0", "")
    assert "synchronous_commit" not in settings and "fsync" not in settings  # acknowledged = durable
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        _services({})  # no default password: compose refuses to start without one


def test_every_gateway_service_gets_the_url_of_the_postgres_service() -> None:
    from psycopg.conninfo import conninfo_to_dict

    services = _services()
    pg_env = services["postgres"]["environment"]
    for name in GATEWAY_SERVICES:
        env = services[name]["environment"]
        parts = conninfo_to_dict(env["ABSTRACTGATEWAY_DB_URL"])  # libpq's own parser
        assert parts == {
            "user": pg_env["POSTGRES_USER"],
            "password": PASSWORD,
            "host": "postgres",
            "port": "5432",
            "dbname": pg_env["POSTGRES_DB"],
        }, name
        assert env["ABSTRACTGATEWAY_DATA_DIR"] == "/data", name
        assert "gateway-data:/data" in services[name]["volumes"], name


def test_the_variables_it_sets_are_declared_settings() -> None:
    from abstractgateway.config_cli import declared

    names = {f"ABSTRACTGATEWAY_{name}" for name in declared()}
    for name, service in _services().items():
        set_here = {key for key in service.get("environment", {}) if key.startswith("ABSTRACTGATEWAY_")}
        assert set_here <= names, f"{name}: {sorted(set_here - names)} are not settings"
    assert "ABSTRACTGATEWAY_DB_URL" in ENV_EXAMPLE.read_text()


def test_commands_use_options_the_cli_has() -> None:
    services = _services()
    for name in GATEWAY_SERVICES:
        command = services[name]["command"]
        text = _help(command[0])
        for word in command[1:]:
            if word.startswith("--"):
                option, _, value = word.partition("=")
                assert re.search(rf"(^|[\s,]){re.escape(option)}\b", text, re.M), f"{name}: {option}"
                if value:  # a choice, e.g. --from=sqlite: among those the help lists
                    assert re.search(rf"\[[^\]]*\b{value}\b[^\]]*\]", text), f"{name}: {word}"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["import-sqlite"]["command"][:2] == ["migrate", "--from=sqlite"]
    assert services["runner"]["command"] == ["runner"]
    assert services["runner-gpu"]["command"] == ["runner", "--label", "gpu"]


def test_two_api_replicas_on_two_ports_after_migrate_after_postgres() -> None:
    services = _services()
    apis = [name for name, s in services.items() if s.get("command", [])[:1] == ["serve"]]
    assert apis == ["api-1", "api-2"]
    published = []
    for name in apis:
        api = services[name]
        assert api["command"] == ["serve", "--no-runner"], name  # runners are their own services
        port = api["environment"]["ABSTRACTGATEWAY_PORT"]
        (mapping,) = api["ports"]
        host, _, container = mapping.rpartition(":")
        assert container == port, name
        assert f":{port}/api/health" in api["healthcheck"]["test"][-1], name
        assert host.startswith("127.0.0.1:"), f"{name}: loopback unless the operator says otherwise"
        published.append(host)
        assert api["stop_signal"] == "SIGTERM"
    assert len(set(published)) == 2, "one published port each"
    for name in ("api-1", "api-2", "runner", "runner-gpu", "import-sqlite"):
        (dependency,) = services[name]["depends_on"]
        assert dependency == "migrate", name
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == services["import-sqlite"]["restart"] == "no"


def test_images_with_the_driver_are_built_apart_from_the_light_one() -> None:
    light = _yaml().safe_load(COMPOSE.read_text())["services"]
    services = _services()
    for name in GATEWAY_SERVICES:
        build = services[name]["build"]
        assert build["args"]["EXTRAS"] == "postgres", name
    light_images = {s["image"] for s in light.values() if "image" in s}
    assert {services[n]["image"] for n in GATEWAY_SERVICES}.isdisjoint(light_images), "no light tag reused"
    # The light compose file builds without extras: its image stays without psycopg.
    assert all("args" not in s.get("build", {}) for s in light.values())
    assert services["runner-gpu"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.nvidia"


@pytest.mark.parametrize(
    ("dockerfile", "plain", "with_postgres"),
    [("Dockerfile", ".", ".[postgres]"), ("Dockerfile.nvidia", ".[gpu]", ".[gpu,postgres]")],
)
def test_dockerfile_extras_arg_installs_the_postgres_extra_only_when_asked(
    dockerfile: str, plain: str, with_postgres: str
) -> None:
    import tomllib

    text = (DOCKER / dockerfile).read_text()
    assert re.search(r'^ARG EXTRAS=""$', text, re.M), dockerfile
    (install,) = re.findall(r"^RUN /opt/abstractgateway/\.venv/bin/pip install (\"[^\"]+\")", text, re.M)
    # docker passes build args to RUN as environment variables; the shell expands them.
    for extras, expected in (("", plain), ("postgres", with_postgres)):
        done = subprocess.run(
            ["sh", "-c", f"printf %s {install}"],
            env={"EXTRAS": extras, "PATH": os.environ["PATH"]},
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert done.stdout == expected, (dockerfile, extras)
    extras_declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("psycopg[") for dep in extras_declared["postgres"])


def test_docker_compose_config_with_every_profile(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_ENV_FILE": str(ENV_EXAMPLE), "POSTGRES_PASSWORD": PASSWORD}
    profiles = ["--profile", "postgres", "--profile", "gpu", "--profile", "import-sqlite"]
    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=60, check=False
        ).returncode
        == 0
    ):
        base = ["docker", "compose", "-f", str(COMPOSE_PG)]
    elif shutil.which("docker-compose"):
        # Compose v1 (end of life) does not know the top-level `name:`: check a copy without it.
        copy = tmp_path / "compose.postgres.yml"
        copy.write_text(re.sub(r"(?m)^name: .*\n", "", COMPOSE_PG.read_text()))
        base = ["docker-compose", "-f", str(copy), "--project-directory", str(DOCKER)]
    elif os.environ.get("CI"):
        pytest.fail("docker-compose is missing: CI installs it (.ci/apt-packages.txt, make test-deps)")
    else:
        pytest.skip("neither `docker compose` (v2 plugin) nor docker-compose is installed")
    done = subprocess.run(
        [*base, *profiles, "config", "--services"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == set(_services())
    # Without the password compose refuses the file instead of starting a server without one.
    env.pop("POSTGRES_PASSWORD")
    refused = subprocess.run(
        [*base, *profiles, "config", "--quiet"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


# --- the services' commands against a real PostgreSQL -----------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            assert proc.wait(60) == 0, f"{proc.args}: SIGTERM should exit 0"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


def test_services_run_for_real_against_postgresql(
    pg_empty_db: PgDatabase, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    services = _services()
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}

    def env_of(name: str, **extra: str) -> dict[str, str]:
        env = {**base, **services[name]["environment"], **extra}
        # The compose file's URL names the `postgres` service; here the test's server and database.
        env["ABSTRACTGATEWAY_DB_URL"] = pg_empty_db.url
        env["ABSTRACTGATEWAY_DATA_DIR"] = str(tmp_path / "data")
        env["ABSTRACTGATEWAY_AUTH_TOKEN"] = "deploy-test-token"
        return env

    cli = [sys.executable, "-m", "abstractgateway"]
    done = subprocess.run(
        [*cli, *services["migrate"]["command"]],
        env=env_of("migrate"), cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    import psycopg

    with psycopg.connect(pg_empty_db.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row is not None and row[0] > 0, "migrate applied the PostgreSQL migrations"

    # import-sqlite, as written, copies a SQLite gateway (made here by `migrate` without the URL, in
    # the data dir the command names) into it and passes its count check.
    lite_dir = tmp_path / "sqlite-gateway"
    lite_env = {**base, "ABSTRACTGATEWAY_DATA_DIR": str(lite_dir)}
    subprocess.run([*cli, "migrate"], env=lite_env, cwd=REPO, check=True, capture_output=True, timeout=300)
    command = [str(lite_dir) if word == "/data" else word for word in services["import-sqlite"]["command"]]
    done = subprocess.run(
        [*cli, *command],
        env=env_of("import-sqlite"), cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    checks = []
    for name in ("api-1", "api-2"):
        port = str(_free_port())
        env = env_of(name, ABSTRACTGATEWAY_HOST="127.0.0.1", ABSTRACTGATEWAY_PORT=port)
        processes.append(subprocess.Popen([*cli, *services[name]["command"]], env=env, cwd=REPO))
        health = services[name]["healthcheck"]["test"]
        checks.append(([sys.executable, *health[2:-1], health[-1].replace(":8080/", f":{port}/")], env))
    runner_env = env_of("runner")
    processes.append(subprocess.Popen([*cli, *services["runner"]["command"]], env=runner_env, cwd=REPO))
    health = services["runner"]["healthcheck"]["test"]
    checks.append(([sys.executable, *health[2:]], runner_env))

    def healthy(command: list[str], env: dict[str, str]) -> bool:
        run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=60, check=False)
        return run.returncode == 0

    for command, env in checks:
        assert wait_for(lambda c=command, e=env: healthy(c, e), timeout_s=120.0, every_s=0.3), (
            f"never healthy: {command[-1][:80]}"
        )
        for proc in processes:
            assert proc.poll() is None, f"{proc.args} exited {proc.returncode}"
