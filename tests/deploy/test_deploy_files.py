"""The deploy files (deploy/systemd, deploy/docker): parsed and checked against the code they run.

Always: the units' hardening and stop settings, the CLI options they pass, the env example against the
ABSTRACTGATEWAY_* variables the code reads (grepped now), the compose services and the images'
healthcheck commands run against real processes. Where the tools exist: `systemd-analyze verify` and
`docker compose config` (skipped with the reason otherwise).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
DOCKER = REPO / "deploy" / "docker"
ENV_EXAMPLE = SYSTEMD / "abstractgateway.env.example"
GPU_DROPIN = SYSTEMD / "runner-gpu.conf"
VLLM_UNIT = SYSTEMD / "abstractgateway-vllm.service"
VLLM_BIN = "/opt/abstractgateway/.venv/bin/vllm"
COMPOSE = DOCKER / "compose.yml"

# The install prefix the units are written for (deploy/README.md).
PREFIX_BIN = "/opt/abstractgateway/.venv/bin/abstractgateway"
DATA_DIR = "/var/lib/abstractgateway"
USER = "abstractgateway"
API_UNITS = ("abstractgateway-api.service", "abstractgateway-api@.service")
RUNNER_UNITS = ("abstractgateway-runner.service", "abstractgateway-runner@.service")
UNITS = API_UNITS + RUNNER_UNITS
# Where the code reads its environment: the API, the runner, the store, and the CLI.
PACKAGES = ("abstractgateway", "api_service", "runner_service", "shared_store")
ENV_VAR = re.compile(r"\bABSTRACTGATEWAY_[A-Z0-9_]*[A-Z0-9]\b")


# --- a tiny unit-file parser: every value of a repeated key is kept, in order ------------------------
def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: keep each setting on one line"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}:{number}: not a setting: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= missing"
    return values[-1]


def seconds(value: str) -> float:
    """A systemd time span in the forms these files use: 60, 60s, 3min, 1min 30s."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s|m|h)?", value):
        total += float(number) * {"ms": 0.001, "s": 1, "": 1, "m": 60, "min": 60, "h": 3600}[unit]
    return total


@pytest.fixture(scope="module", params=UNITS)
def unit(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, list[str]]]]:
    return request.param, parse_unit(SYSTEMD / request.param)


# --- systemd: structure, hardening, stop ---------------------------------------------------------------
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native",
}


def test_units_are_hardened(unit: tuple[str, dict[str, dict[str, list[str]]]]) -> None:
    name, parsed = unit
    for key, expected in HARDENING.items():
        assert one(parsed, "Service", key) == expected, f"{name}: {key}"
    assert one(parsed, "Service", "User") == USER and one(parsed, "Service", "Group") == USER, name
    families = set(one(parsed, "Service", "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}, name
    assert "@system-service" in parsed["Service"]["SystemCallFilter"], name
    # The data dir is the one writable place, and it is where the processes are told the data is.
    assert DATA_DIR in one(parsed, "Service", "ReadWritePaths").split(), name
    assert f"ABSTRACTGATEWAY_DATA_DIR={DATA_DIR}" in parsed["Service"]["Environment"], name
    assert one(parsed, "Service", "StateDirectory") == "abstractgateway", name
    assert one(parsed, "Service", "WorkingDirectory") == DATA_DIR, name


def test_units_stop_gracefully_and_restart_on_failure(
    unit: tuple[str, dict[str, dict[str, list[str]]]],
) -> None:
    name, parsed = unit
    assert one(parsed, "Service", "KillSignal") == "SIGTERM", name
    assert one(parsed, "Service", "Restart") == "on-failure", name
    stop_s = seconds(one(parsed, "Service", "TimeoutStopSec"))
    if name in RUNNER_UNITS:
        # The runner finishes its current tick (one step may be a long LLM call) before releasing leases.
        assert stop_s >= 60, name
    else:
        # The API ends SSE streams at once and Hypercorn's graceful timeout is 5 s.
        assert 10 <= stop_s <= 60, name
        assert one(parsed, "Service", "KillMode") == "mixed", name
    assert one(parsed, "Install", "WantedBy") == "multi-user.target", name


def _commands(parsed: dict[str, dict[str, list[str]]]) -> list[str]:
    service = parsed["Service"]
    return [*service.get("ExecStartPre", []), *service["ExecStart"]]


def test_units_run_the_prefix_binary_with_options_the_cli_has(
    unit: tuple[str, dict[str, dict[str, list[str]]]],
) -> None:
    from abstractgateway.cli import main

    name, parsed = unit
    for command in _commands(parsed):
        words = command.split()
        assert words[0] == PREFIX_BIN, f"{name}: absolute path under the install prefix, not {words[0]}"
        assert "/usr/bin/env" not in command
        sub = main.commands[words[1]]
        known = {opt for param in sub.params for opt in (*param.opts, *param.secondary_opts)}
        for word in words[2:]:
            if word.startswith("--"):
                assert word in known, f"{name}: `{words[1]} {word}` is not an option of the CLI"


def test_api_units_migrate_first_and_serve_without_a_runner() -> None:
    for name in API_UNITS:
        parsed = parse_unit(SYSTEMD / name)
        assert one(parsed, "Service", "ExecStartPre") == f"{PREFIX_BIN} migrate", name
        serve = one(parsed, "Service", "ExecStart").split()
        assert serve[1:3] == ["serve", "--no-runner"], name
        # Two instances of the template share the port during a hand-over; the plain unit binds alone.
        assert ("--reuse-port" in serve) == name.endswith("@.service"), name
        assert int(one(parsed, "Service", "LimitNOFILE")) >= 10_000, name  # one fd per SSE stream


def test_vllm_unit_serves_the_model_on_loopback_with_the_gpu_allowed() -> None:
    vllm = parse_unit(VLLM_UNIT)
    start = one(vllm, "Service", "ExecStart")
    assert start.startswith(f"{VLLM_BIN} serve ${{VLLM_MODEL}} ") and "--host 127.0.0.1 --port 8000" in start
    assert one(vllm, "Service", "User") == USER and one(vllm, "Service", "PrivateDevices") == "no"
    assert any("nvidia" in value for value in vllm["Service"]["DeviceAllow"])
    assert "HF_HUB_OFFLINE=1" in vllm["Service"]["Environment"]
    assert (
        one(vllm, "Service", "NoNewPrivileges") == "yes"
        and one(vllm, "Service", "CapabilityBoundingSet") == ""
    )
    # The command that points the runners at it, as the unit's header gives it, is one the CLI accepts.
    assert "config set-default output.text" in VLLM_UNIT.read_text()
    assert "--base-url http://127.0.0.1:8000/v1" in VLLM_UNIT.read_text()


def test_compose_gpu_profile_serves_vllm_and_points_the_runners_at_it() -> None:
    services = _compose()["services"]
    vllm, default = services["vllm"], services["vllm-default"]
    assert vllm["profiles"] == default["profiles"] == ["gpu"]
    assert vllm["entrypoint"] == [VLLM_BIN, "serve"] and "8000" in vllm["command"]
    assert vllm["build"]["dockerfile"] == "deploy/docker/Dockerfile.nvidia"
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "/health" in vllm["healthcheck"]["test"][-1]
    command = default["command"]
    assert command[:5] == ["config", "set-default", "output.text", "--provider", "vllm"]
    assert command[command.index("--base-url") + 1] == "http://vllm:8000/v1"
    assert command[command.index("--model") + 1] == vllm["command"][0]  # the model vllm serves
    assert default["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_runner_units_have_distinct_ids() -> None:
    plain = one(parse_unit(SYSTEMD / "abstractgateway-runner.service"), "Service", "ExecStart")
    template = one(parse_unit(SYSTEMD / "abstractgateway-runner@.service"), "Service", "ExecStart")
    assert "--runner-id %H-runner" in plain
    assert "--runner-id %H-%i" in template  # one lease owner per instance


def test_gpu_dropin_relaxes_only_what_the_media_stack_needs() -> None:
    dropin = parse_unit(GPU_DROPIN)
    assert set(dropin) == {"Service"}
    assert one(dropin, "Service", "PrivateDevices") == "no"
    assert any("nvidia" in value for value in dropin["Service"]["DeviceAllow"])
    assert one(dropin, "Service", "MemoryDenyWriteExecute") == "no"
    # The label compose.postgres.yml's GPU runner has too (`runner --label gpu`).
    assert "ABSTRACTGATEWAY_RUNNER_LABELS=gpu" in dropin["Service"]["Environment"]
    runner = parse_unit(SYSTEMD / "abstractgateway-runner@.service")
    assert seconds(one(dropin, "Service", "TimeoutStopSec")) >= seconds(
        one(runner, "Service", "TimeoutStopSec")
    )
    # It leaves the rest of the sandbox alone.
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "User", "ReadWritePaths"):
        assert key not in dropin["Service"], key


def test_sysusers_creates_the_units_user() -> None:
    lines = [
        line
        for line in (SYSTEMD / "abstractgateway.sysusers.conf").read_text().splitlines()
        if line[:1] == "u"
    ]
    assert [line.split()[1] for line in lines] == [USER]
    assert DATA_DIR in lines[0]


# --- systemd-analyze verify (where systemd is installed) ---------------------------------------------
def _real_binary() -> Path | None:
    candidate = Path(sys.executable).parent / "abstractgateway"
    if candidate.exists():
        return candidate
    found = shutil.which("abstractgateway")
    return Path(found) if found else None


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    binary = _real_binary()
    if binary is None:
        pytest.skip("no abstractgateway executable to point the units at")
    # verify fails a unit whose ExecStart binary does not exist, and /opt/abstractgateway/.venv is the
    # install prefix, not this checkout: check copies whose commands point at this venv's executable.
    for path in SYSTEMD.glob("*.service"):
        text = path.read_text().replace(PREFIX_BIN, str(binary))
        # vllm is not installed here (never by CI): any executable stands in for it.
        (tmp_path / path.name).write_text(text.replace(VLLM_BIN, sys.executable))
    dropin = tmp_path / "abstractgateway-runner@gpu.service.d"
    dropin.mkdir()
    shutil.copy(GPU_DROPIN, dropin / GPU_DROPIN.name)
    names = [
        "abstractgateway-api.service",
        "abstractgateway-api@blue.service",
        "abstractgateway-runner.service",
        "abstractgateway-runner@1.service",
        "abstractgateway-runner@gpu.service",  # with the drop-in beside it
        VLLM_UNIT.name,
    ]
    for name in names:
        done = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        # verify exits 0 on settings it could not parse ("..., ignoring"): any line about our files fails.
        ours = [line for line in output.splitlines() if "abstractgateway" in line or str(tmp_path) in line]
        assert done.returncode == 0 and not ours, f"{name}:\n{output}"


# --- the env example: generated from the settings declarations -----------------------------------------
def _code_files() -> list[Path]:
    return [file for package in PACKAGES for file in (REPO / package).rglob("*.py")]


def _example_variables() -> dict[str, str]:
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"#? ?(ABSTRACTGATEWAY_[A-Z0-9_]+)=(.*)$", line)
        if match:
            variables[match.group(1)] = match.group(2)
    return variables


def test_env_example_is_the_generated_one() -> None:
    from abstractgateway.config_cli import env_example

    assert ENV_EXAMPLE.read_text() == env_example(), (
        "regenerate: abstractgateway config example --write deploy/systemd/abstractgateway.env.example"
    )
    done = subprocess.run(
        [sys.executable, "-m", "abstractgateway", "config", "example", "--check", str(ENV_EXAMPLE)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_every_variable_the_code_names_is_declared_and_every_declared_one_is_used() -> None:
    from abstractgateway.config_cli import declared

    settings = declared()
    named: set[str] = set()
    for file in _code_files():
        named.update(ENV_VAR.findall(file.read_text()))
    assert len(named) >= 10, named  # the grep works
    listed = set(_example_variables())
    assert sorted(named - listed) == [], "the code names variables no setting declares"
    assert listed == {f"ABSTRACTGATEWAY_{name}" for name in settings}
    # The other direction: each declared field is read somewhere (an attribute or a key), so the
    # example lists nothing nothing uses.
    source = "".join(file.read_text() for file in _code_files())
    declaring = {"shared_store/settings.py", "api_service/settings.py", "runner_service/settings.py"}
    outside = "".join(
        file.read_text() for file in _code_files() if str(file.relative_to(REPO)) not in declaring
    )
    import dataclasses

    from abstractgateway.config_cli import settings_classes

    fields = {f.name for cls in settings_classes() for f in dataclasses.fields(cls) if "env" in f.metadata}
    unused = sorted(f for f in fields if f".{f}" not in outside and f'"{f}"' not in source)
    assert unused == [], "declared settings nothing reads"


def test_no_code_reads_our_variables_from_the_environment_itself() -> None:
    """Every ABSTRACTGATEWAY_* read goes through the settings declarations (read once at start-up)."""
    direct = re.compile(
        r"(environ(\.get)?[\[(]\s*[\"']ABSTRACTGATEWAY_|getenv\(\s*[\"']ABSTRACTGATEWAY_|envvar=)"
    )
    offenders = [
        f"{file.relative_to(REPO)}:{number}: {line.strip()}"
        for file in _code_files()
        for number, line in enumerate(file.read_text().splitlines(), 1)
        if direct.search(line)
    ]
    assert offenders == []


def test_env_example_is_plain_key_value_for_systemd_and_docker() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^\"'\s]*", line), line
    # No token ships: serve refuses to start on a public host until one is set.
    assert _example_variables()["ABSTRACTGATEWAY_AUTH_TOKEN"] == ""


# --- docker ----------------------------------------------------------------------------------------------
def _compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (abstractruntime usually brings it)")
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_text_names_the_services_and_the_volume() -> None:
    text = COMPOSE.read_text()
    for service in ("migrate", "api", "runner", "runner-gpu", "vllm", "vllm-default"):
        assert re.search(rf"^  {re.escape(service)}:$", text, re.M), service
    assert "- gateway-data:/data" in text and "--no-deps api" in text


def test_compose_runs_api_and_runner_apart_on_one_volume() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"migrate", "api", "runner", "runner-gpu"} <= set(services)
    api, runner, gpu, migrate = (services[s] for s in ("api", "runner", "runner-gpu", "migrate"))
    assert api["command"] == ["serve", "--no-runner"]
    assert runner["command"] == gpu["command"] == ["runner"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"

    def data_volume(service: dict) -> str:
        (volume,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == "/data"]
        return volume

    assert data_volume(api) == data_volume(runner) == data_volume(gpu) == data_volume(migrate)
    assert data_volume(api) in compose["volumes"]
    for service in (api, runner, gpu):
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["stop_signal"] == "SIGTERM"
        assert service["env_file"]
    assert seconds(api["stop_grace_period"]) >= 10
    assert seconds(runner["stop_grace_period"]) >= 60
    assert gpu["profiles"] == ["gpu"] and "profiles" not in api and "profiles" not in runner
    assert gpu["build"]["dockerfile"] == "deploy/docker/Dockerfile.nvidia"
    assert api["build"]["dockerfile"] == runner["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert api["environment"]["ABSTRACTGATEWAY_HOST"] == "0.0.0.0"


def _dockerfile_copies(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources.extend(line.split()[1:-1])
    return sources


def _installed_sources() -> set[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    modules = {f"{module}.py" for module in setuptools.get("py-modules", [])}
    # Packages are listed by name; a mapped one (shared_store.migrations -> migrations/) ships its folder.
    mapped = setuptools.get("package-dir", {})
    packages = {mapped.get(name, name).split(".")[0].split("/")[0] for name in setuptools["packages"]}
    return modules | packages | {"pyproject.toml", project["project"]["readme"]}


def test_dockerfiles_copy_what_exists_and_run_unprivileged() -> None:
    for name in ("Dockerfile", "Dockerfile.nvidia"):
        dockerfile = DOCKER / name
        text = dockerfile.read_text()
        copied = {path.name for source in _dockerfile_copies(dockerfile) for path in REPO.glob(source)}
        for source in _dockerfile_copies(dockerfile):
            assert list(REPO.glob(source)), f"{name}: COPY {source} matches nothing"
        # Everything pip installs from the source tree is in it (a module added later included).
        assert _installed_sources() <= copied, f"{name}: COPY misses {_installed_sources() - copied}"
        assert re.search(r"^USER gateway$", text, re.M), name
        assert 'ENTRYPOINT ["/opt/abstractgateway/.venv/bin/abstractgateway"]' in text, name
        assert (DOCKER / f"{name}.dockerignore").exists(), name
    light = (DOCKER / "Dockerfile").read_text()
    # The light profile: no extras unless the EXTRAS build arg names some (compose.postgres.yml).
    assert "python:3.11-slim" in light and 'pip install ".${EXTRAS:+[$EXTRAS]}"' in light
    assert "curl" not in light.replace("# ", "") and "/api/health" in light
    nvidia = (DOCKER / "Dockerfile.nvidia").read_text()
    assert "nvidia/cuda:" in nvidia
    assert nvidia.index("pip install torch==2.13.0") < nvidia.index('pip install ".[gpu${EXTRAS:+,$EXTRAS}]"')


def _compose_env() -> dict[str, str]:
    return {**os.environ, "GATEWAY_ENV_FILE": str(ENV_EXAMPLE)}


def _docker_compose_v2() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def test_docker_compose_config(tmp_path: Path) -> None:
    if _docker_compose_v2():
        command = ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"]
        profiles = ["docker", "compose", "-f", str(COMPOSE), "--profile", "gpu", "config", "--services"]
    elif shutil.which("docker-compose"):
        # Compose v1 (end of life) does not know the top-level `name:`: check a copy without it.
        copy = tmp_path / "compose.yml"
        copy.write_text(re.sub(r"(?m)^name: .*\n", "", COMPOSE.read_text()))
        base = ["docker-compose", "-f", str(copy), "--project-directory", str(DOCKER)]
        command = [*base, "config", "--quiet"]
        profiles = [*base, "--profile", "gpu", "config", "--services"]
    elif os.environ.get("CI"):
        pytest.fail("docker-compose is missing: CI installs it (.ci/apt-packages.txt, make test-deps)")
    else:
        pytest.skip("neither `docker compose` (v2 plugin) nor docker-compose is installed")
    done = subprocess.run(
        command, env=_compose_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        profiles, env=_compose_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert {"migrate", "api", "runner", "runner-gpu", "vllm", "vllm-default"} <= set(done.stdout.split())


# --- the healthcheck commands, run against real processes -----------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dockerfile_healthcheck() -> list[str]:
    import json

    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M)
    assert match, "Dockerfile: HEALTHCHECK ... CMD [exec form]"
    command = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def _check(command: list[str], env: dict[str, str], cwd: Path) -> int:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=60, check=False).returncode


def test_healthchecks_pass_against_live_processes_and_sigterm_exits_0(tmp_path: Path) -> None:
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    env = {
        **base,
        "ABSTRACTGATEWAY_DATA_DIR": str(tmp_path),
        "ABSTRACTGATEWAY_AUTH_TOKEN": "deploy-test-token",
        "ABSTRACTGATEWAY_HOST": "127.0.0.1",
        "ABSTRACTGATEWAY_PORT": str(port),
    }
    cli = [sys.executable, "-m", "abstractgateway"]
    api_check = _dockerfile_healthcheck()
    runner_check = [sys.executable, *_compose()["services"]["runner"]["healthcheck"]["test"][2:]]
    assert _check(api_check, env, tmp_path) != 0, "nothing listens yet"

    # The compose order: migrate, then the API (--no-runner) and a runner as separate processes.
    subprocess.run([*cli, "migrate"], env=env, cwd=REPO, check=True, capture_output=True, timeout=60)
    api = subprocess.Popen([*cli, "serve", "--no-runner"], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    runner = subprocess.Popen([*cli, "runner"], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _check(api_check, env, tmp_path) == 0), "the API never became healthy"
        assert wait_for(lambda: _check(runner_check, env, tmp_path) == 0), "the runner never heartbeated"
    finally:
        for process in (api, runner):
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in (api, runner)]
    # A clean stop is exit 0, so Restart=on-failure / restart policies leave a stopped service alone.
    assert codes == [0, 0]
    assert _check(api_check, env, tmp_path) != 0
    assert _check(runner_check, env, tmp_path) != 0, "a stopped runner is not healthy"
