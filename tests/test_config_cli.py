"""`abstractgateway config`: init writes a private env file, set-default edits it, status reads it
(and the db) without ever printing the token; every setting the code reads is documented."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from gateway_config import SETTINGS, read_env_file
from tests.conftest import REPO


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway_cli", *args], cwd=cwd, env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_init_set_default_and_status(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    assert (
        _cli(
            "config", "init", "--env-file", str(env_file), "--data-dir", str(tmp_path / "d"), cwd=tmp_path
        ).returncode
        == 0
    )
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    token = read_env_file(env_file)["ABSTRACTGATEWAY_AUTH_TOKEN"]
    assert len(token) >= 32
    again = _cli("config", "init", "--env-file", str(env_file), cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr

    assert (
        _cli(
            "config",
            "set-default",
            "provider",
            "openai-compatible",
            "--env-file",
            str(env_file),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    secret = _cli(
        "config", "set-default", "api_key", "sk-very-secret", "--env-file", str(env_file), cwd=tmp_path
    )
    assert secret.returncode == 0 and "sk-very-secret" not in secret.stdout
    bad = _cli("config", "set-default", "colour", "blue", "--env-file", str(env_file), cwd=tmp_path)
    assert bad.returncode == 2 and "unknown setting" in bad.stderr
    values = read_env_file(env_file)
    assert (
        values["ABSTRACTGATEWAY_PROVIDER"] == "openai-compatible"
        and values["ABSTRACTGATEWAY_AUTH_TOKEN"] == token
    )

    before = _cli("config", "status", "--env-file", str(env_file), cwd=tmp_path)
    assert "no database yet" in before.stdout and "configured (1)" in before.stdout
    assert _cli("migrate", "--data-dir", str(tmp_path / "d"), cwd=tmp_path).returncode == 0
    after = _cli("config", "status", "--env-file", str(env_file), cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert "schema:          version" in after.stdout and "runners alive:   0" in after.stdout
    assert "openai-compatible" in after.stdout
    assert token not in after.stdout + after.stderr and "sk-very-secret" not in after.stdout


def test_every_setting_the_code_reads_is_documented() -> None:
    source = (
        "".join(
            path.read_text()
            for folder in ("api_service", "runner_service", "shared_store")
            for path in (REPO / folder).rglob("*.py")
        )
        + (REPO / "gateway_cli.py").read_text()
    )
    read = set(re.findall(r"ABSTRACTGATEWAY_([A-Z_]+[A-Z])", source))
    assert read, "found the settings the code reads"
    assert read <= set(SETTINGS), f"undocumented: {sorted(read - set(SETTINGS))}"


def test_abstractgateway_config_is_installed_beside_abstractgateway_config(tmp_path: Path) -> None:
    """The original's command name: `abstractgateway-config init|status|...` runs the same group."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["abstractgateway-config"].split(":")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    # What the installed console script runs: the entry point's function, as its own program.
    code = (
        f"import sys; from {module} import {function}; sys.argv[0] = 'abstractgateway-config'; {function}()"
    )
    env_file = tmp_path / ".env"
    done = subprocess.run(
        [sys.executable, "-c", code, "init", "--env-file", str(env_file), "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_env_file(env_file)["ABSTRACTGATEWAY_AUTH_TOKEN"]
    helped = subprocess.run(
        [sys.executable, "-c", code, "--help"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert helped.returncode == 0 and "Usage: abstractgateway-config" in helped.stdout
    assert {"init", "status", "set-default"} <= set(re.findall(r"^  (\S+)", helped.stdout, re.M))
