"""The light profile: the built wheel, installed alone into a fresh venv (no torch), serves the API and
runs a run to completion with its own runner.

Slow by nature (pip installs ~100 packages, ~1-3 min with a warm pip cache), so it is marked `slow`;
`make test` (CI) runs it. Bytecode compilation is skipped and the venv gets no pip of its own: the
outer pip installs into it (`pip --python`), which is all the test needs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.visualflows import echo_flow, write

TOKEN = "light-profile-token-" + "x" * 16
# What the wheel is built from: the repository without its venv, caches and local data.
SKIP_COPY = shutil.ignore_patterns(
    ".git", ".venv", "data", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(*args: str | Path, timeout: float = 900, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]


@pytest.mark.slow
def test_the_light_wheel_serves_and_runs_without_torch(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP_COPY)
    # With setuptools at hand (Python 3.11 venvs have it) the build needs no download; else pip
    # fetches the build backend into an isolated build env.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                 "-w", tmp_path / "wheels", source)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("abstractgateway-*.whl")

    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    installed = _run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
        "-c", REPO / "constraints.txt", wheel,
    )  # fmt: skip
    if installed.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"pip could not install the light profile:\n{installed.stderr[-3000:]}")
        pytest.skip(
            f"pip could not install the light profile here (no package index?): {installed.stderr[-500:]}"
        )
    probe = _run(python, "-c", "import importlib.util as u; print([m for m in ('torch', 'diffusers', "
                 "'transformers', 'vllm', 'abstractruntime', 'abstractcore') if u.find_spec(m)])")  # fmt: skip
    assert probe.stdout.strip() == "['abstractruntime', 'abstractcore']", probe.stdout + probe.stderr

    flows = tmp_path / "flows"
    write(flows, "echo.json", echo_flow("light_echo"))
    port = _free_port()
    # Outside the repository and without PYTHONPATH: only what the wheel installed is importable.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "ABSTRACTGATEWAY_AUTH_TOKEN": TOKEN}  # fmt: skip
    serve_cmd = [str(venv / "bin" / "abstractgateway"), "serve", "--port", str(port), "--migrate",
                 "--data-dir", str(tmp_path / "data"), "--flows-dir", str(flows)]  # fmt: skip
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(serve_cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        for _ in range(600):  # start-up: a hang guard, not a measurement
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        started = client.post("/api/gateway/runs/start", json={"bundle_id": "light_echo",
                              "input_data": {"message": "light and complete"}})  # fmt: skip
        assert started.status_code == 200, started.text
        run_id = started.json()["run_id"]
        view: dict = {}
        for _ in range(1_200):
            view = client.get(f"/api/gateway/runs/{run_id}").json()
            if view.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.1)
        assert view.get("status") == "completed", f"{view}\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
        assert view["output"]["result"] == "light and complete"
        client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
