"""`abstractgateway config`: init writes a private env file, set-default edits it, status reads it
(and the db) without ever printing the token; every setting the code reads is documented."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from abstractgateway.config_cli import declared, read_env_file
from tests.conftest import REPO


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "abstractgateway", *args], cwd=cwd, env={**env, "PYTHONPATH": str(REPO)},
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


def test_init_writes_every_declared_setting_documented_and_status_checks_them(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    done = _cli(
        "config", "init", "--env-file", str(env_file), "--data-dir", str(tmp_path / "d"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    text = env_file.read_text()
    settings = declared()
    assert len(settings) >= 50
    for name, env in settings.items():
        assert env.doc and "\n" not in env.doc, name
        # Each one documented: its doc line, then its line (commented out unless init chose a value).
        assert re.search(rf"^# {re.escape(env.doc)}\n#? ?ABSTRACTGATEWAY_{name}=", text, re.M), name
    assert read_env_file(env_file)["ABSTRACTGATEWAY_DATA_DIR"] == str(tmp_path / "d")
    ok = _cli("config", "status", "--env-file", str(env_file), cwd=tmp_path)
    assert "settings:        ok" in ok.stdout, ok.stdout
    # A value a process would refuse at start-up is named by status.
    set_bad = _cli(
        "config", "set-default", "sandbox_cpu_s", "lots", "--env-file", str(env_file), cwd=tmp_path
    )
    assert set_bad.returncode == 0, set_bad.stderr
    bad = _cli("config", "status", "--env-file", str(env_file), cwd=tmp_path)
    assert "ABSTRACTGATEWAY_SANDBOX_CPU_S must be a whole number, not 'lots'" in bad.stdout, bad.stdout


def test_capability_defaults_set_clear_and_status(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    early = _cli(
        "config", "set-default", "output.text", "--provider", "vllm", "--data-dir", data, cwd=tmp_path
    )
    assert early.returncode == 2 and "abstractgateway migrate" in early.stderr  # no db yet: says what to run
    assert _cli("migrate", "--data-dir", data, cwd=tmp_path).returncode == 0

    text = _cli(
        "config", "set-default", "output.text", "--provider", "vllm", "--model", "Qwen/Qwen3-8B",
        "--base-url", "http://127.0.0.1:8000/v1", "--option", "seed=7", "--option", "stop=[\"END\"]",
        "--data-dir", data, cwd=tmp_path,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    # input.audio is how the original names speech input: stored as the transcription route.
    voice = _cli("config", "set-default", "input.audio", "--provider", "faster-whisper", "--model", "/m/w",
                 "--data-dir", data, cwd=tmp_path)  # fmt: skip
    assert voice.returncode == 0 and "input.voice -> faster-whisper" in voice.stdout

    from shared_store import Database
    from shared_store.capability_defaults import list_defaults

    db = Database(tmp_path / "d" / "gateway.sqlite3")
    try:
        rows = {d.route: d for d in list_defaults(db)}
    finally:
        db.close()
    assert set(rows) == {"output.text", "input.voice"}
    assert (rows["output.text"].provider, rows["output.text"].model) == ("vllm", "Qwen/Qwen3-8B")
    assert rows["output.text"].base_url == "http://127.0.0.1:8000/v1"
    assert rows["output.text"].options == {"seed": 7, "stop": ["END"]}  # JSON values parsed

    status = _cli("config", "status", "--data-dir", data, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "capability defaults: 2" in status.stdout
    assert "output.text -> vllm / Qwen/Qwen3-8B at http://127.0.0.1:8000/v1" in status.stdout

    cleared = _cli("config", "clear-default", "input.voice", "--data-dir", data, cwd=tmp_path)
    assert cleared.returncode == 0 and "input.voice cleared" in cleared.stdout
    again = _cli("config", "clear-default", "input.voice", "--data-dir", data, cwd=tmp_path)
    assert again.returncode == 0 and "had no default" in again.stdout
    assert "capability defaults: 1" in _cli("config", "status", "--data-dir", data, cwd=tmp_path).stdout


def test_unknown_routes_and_providers_are_refused_listing_the_valid_ones(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    assert _cli("migrate", "--data-dir", data, cwd=tmp_path).returncode == 0
    route = _cli(
        "config", "set-default", "output.txt", "--provider", "vllm", "--data-dir", data, cwd=tmp_path
    )
    assert route.returncode == 2 and "unknown capability route 'output.txt'" in route.stderr
    assert "output.text, output.voice, input.voice, output.image" in route.stderr
    provider = _cli(
        "config", "set-default", "output.text", "--provider", "nope", "--data-dir", data, cwd=tmp_path
    )
    assert provider.returncode == 2 and "unknown provider 'nope' for output.text" in provider.stderr
    assert "vllm" in provider.stderr and "openai-compatible" in provider.stderr  # AbstractCore's providers
    media = _cli(
        "config", "set-default", "output.voice", "--provider", "vllm", "--data-dir", data, cwd=tmp_path
    )
    assert media.returncode == 2 and "providers: piper" in media.stderr
    missing = _cli("config", "set-default", "output.music", "--data-dir", data, cwd=tmp_path)
    assert missing.returncode == 2 and "needs --provider" in missing.stderr
    clear = _cli("config", "clear-default", "output.nothing", "--data-dir", data, cwd=tmp_path)
    assert clear.returncode == 2 and "unknown capability route" in clear.stderr
    status = _cli("config", "status", "--data-dir", data, cwd=tmp_path)
    assert "capability defaults: (none)" in status.stdout  # nothing was written by the refusals


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
