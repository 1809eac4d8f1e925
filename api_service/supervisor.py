"""`serve` keeps its runner child alive: restarted when it dies (with backoff), visible in /api/health
and the logs, and never outliving `serve` (PR_SET_PDEATHSIG in the child, plus the runner's own
parent-pid watch for a parent that vanished before the signal could be armed).

The runner's environment is `serve`'s minus the API's secrets: a runner never needs the bearer
tokens, and code a runner runs must not find them (see runner_service/sandbox for the code itself).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from .startup import RunnerProcess

log = logging.getLogger("abstractgateway.serve")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# A runner that stayed up this long was healthy: its next death restarts it at the first backoff.
STABLE_S = 60.0
SUPERVISOR_PID_ENV = "ABSTRACTGATEWAY_SUPERVISOR_PID"


def runner_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a runner gets: no API token or other API-side secret (the LLM key stays)."""
    env = dict(os.environ if environ is None else environ)
    for name in list(env):
        setting = name.upper().removeprefix("ABSTRACTGATEWAY_")
        if setting != name.upper() and (
            setting.startswith("AUTH") or "TOKEN" in setting or "SECRET" in setting
        ):
            del env[name]
    env[SUPERVISOR_PID_ENV] = str(os.getpid())
    return env


class RunnerSupervisor:
    """Starts the runner, restarts it when it exits on its own, stops it with `serve`."""

    name = "runner"

    def __init__(self, runner: RunnerProcess) -> None:
        self.runner = runner
        self.restarts = 0
        self.last_exit: int | None = None
        self.restarting_at: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.runner.pid

    def start(self) -> None:
        self.runner.start(env=runner_environment())
        self._thread = threading.Thread(target=self._watch, name="runner-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.runner.stop()
        if self._thread is not None:
            self._thread.join(5)

    def status(self) -> dict[str, Any]:
        process = self.runner.process
        alive = process is not None and process.poll() is None
        out: dict[str, Any] = {"alive": alive, "pid": self.runner.pid, "restarts": self.restarts}
        out["last_exit_code"] = self.last_exit
        if self.restarting_at is not None:
            out["restart_in_s"] = round(max(0.0, self.restarting_at - time.monotonic()), 3)
        return out

    def _watch(self) -> None:
        backoff = BACKOFF_FIRST_S
        started = time.monotonic()
        while not self._stopping.is_set():
            process = self.runner.process
            if process is None or process.poll() is None:
                self._stopping.wait(0.2)
                continue
            self.last_exit = process.returncode  # poll() reaped it: no zombie is left behind
            if self._stopping.is_set():
                return
            if time.monotonic() - started > STABLE_S:
                backoff = BACKOFF_FIRST_S
            self.restarts += 1
            self.restarting_at = time.monotonic() + backoff
            log.warning(
                "runner pid %s exited with %s; restarting it in %.1fs (restart %d)",
                process.pid, process.returncode, backoff, self.restarts,
            )  # fmt: skip
            if self._stopping.wait(backoff):
                return
            self.restarting_at = None
            self.runner.start(env=runner_environment())
            started = time.monotonic()
            log.warning("runner restarted: pid %s", self.runner.pid)
            backoff = min(backoff * 2, BACKOFF_MAX_S)


current: RunnerSupervisor | None = None  # the one `serve` runs in this process, for /api/health
