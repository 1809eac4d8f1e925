"""Browser tests: real headless Chromium (Debian's `chromium`) driven by Playwright, against a real
`abstractgateway serve --no-runner` process and a real runner process over one db file.

The browser is the system's Chromium (never `playwright install`). Without it (or without the
playwright package) the tests skip saying so, except under CI, which installs both: there they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

TOKEN = "console-token-" + "y" * 24
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: .ci/apt-packages.txt, pyproject's test extra)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(1_500):
        if process.poll() is not None:
            raise RuntimeError(f"process exited {process.returncode}: {log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} never opened: {log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Deployment:
    """`serve --no-runner` (restartable on the same port) and one runner, on one data dir."""

    tmp: Path
    flows: Path
    runner_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    runner: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.tmp / "api.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
        env.update(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_DATA_DIR=str(self.tmp))
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ABSTRACTGATEWAY_LOG_LEVEL="debug")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def start_api(self) -> None:
        args = [
            sys.executable,
            "-m",
            "abstractgateway",
            "serve",
            "--no-runner",
            "--migrate",
            "--host",
            "127.0.0.1",
        ]
        args += ["--port", str(self.port), "--flows-dir", str(self.flows)]
        # A metrics directory per start, under the test's tmp: a SIGKILLed serve cannot remove its own.
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=self.tmp))
        env = {**self.env(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        with self.log.open("ab") as log:
            self.api = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
        wait_port(self.port, self.api, self.log)

    def start_runner(self) -> None:
        args = [
            sys.executable,
            "-m",
            "abstractgateway",
            "runner",
            "--flows-dir",
            str(self.flows),
            "--poll-s",
            "0.02",
        ]
        with (self.tmp / "runner.log").open("ab") as log:
            self.runner = subprocess.Popen(
                args, env={**self.env(), **self.runner_env}, stdout=subprocess.DEVNULL, stderr=log
            )

    def restart_api(self, sig: int = signal.SIGKILL) -> None:
        stop(self.api, sig)
        self.start_api()

    def close(self) -> None:
        stop(self.runner)
        stop(self.api)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def start(self, bundle_id: str, input_data: dict[str, Any] | None = None) -> str:
        with self.client() as client:
            response = client.post(
                "/api/gateway/runs/start", json={"bundle_id": bundle_id, "input_data": input_data or {}}
            )
        assert response.status_code == 200, response.text
        return response.json()["run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/api/gateway/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        with self.client() as client:
            return client.get(f"/api/gateway/runs/{run_id}/ledger", params={"limit": 5_000}).json()["items"]

    def wait_run(self, run_id: str, predicate, tries: int = 3_000) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for _ in range(tries):
            view = self.run(run_id)
            if predicate(view):
                return view
            time.sleep(0.02)
        raise AssertionError(f"run {run_id} never reached the expected state: {view}")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        _missing("Debian's chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright; no browser download)")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chrome
        finally:
            chrome.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Deployment]:
    dep = Deployment(tmp_path_factory.mktemp("console"), flows)
    dep.start_api()
    dep.start_runner()
    try:
        yield dep
    finally:
        dep.close()


@pytest.fixture
def page(browser: Any, deployment: Deployment, tmp_path: Path) -> Iterator[Any]:
    """A fresh tab signed in to the console."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    login(tab, deployment.url)
    try:
        yield tab
    finally:
        tab.screenshot(path=str(tmp_path / "last.png"), full_page=True)
        context.close()


def login(tab: Any, url: str, token: str = TOKEN) -> None:
    tab.goto(f"{url}/console/")
    tab.fill("#token", token)
    tab.click("#login button[type=submit]")
    tab.wait_for_selector("#runs-table")


def screenshot(tab: Any, tmp_path: Path, name: str) -> Path:
    """Saved under the test's tmp dir; CONSOLE_SCREENSHOT_DIR (e.g. docs/) also gets a copy."""
    path = tmp_path / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("CONSOLE_SCREENSHOT_DIR")
    if extra:
        shutil.copy(path, Path(extra) / f"console-{name}.png")
    return path
