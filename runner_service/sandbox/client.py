"""The runner's side of the sandbox: one fork-server process per worker thread, started lazily with an
empty environment, asked one request at a time, killed (with everything it forked) on a wall-clock
timeout or when the run is cancelled, and started afresh on the next request."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ..settings import current
from .zygote import _HEADER

log = structlog.get_logger("runner")

_BOOT = "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from runner_service.sandbox.zygote import main; main()"
# How often a waiting runner looks at the run's inbox for a cancel: a cancel takes effect within
# this plus the runner's poll, while the look itself is one indexed read.
CANCEL_POLL_S = 0.2
# A wait longer than this is "slow": the runner lets other workers serve meanwhile. Most code nodes
# answer in ~10 ms (bench/bench_sandbox.py), so ordinary flows never trigger it.
SLOW_S = 1.0


class SandboxStop(BaseException):
    """Raised through abstractruntime's `except Exception` blocks: the run, not the node, must end."""


class SandboxLimit(SandboxStop):
    """A code node went over a limit (CPU, memory, wall clock): the run fails with this reason."""


class SandboxCancelled(SandboxStop):
    """The run was cancelled while its code node ran: the node was killed; the cancel applies next."""


@dataclass(frozen=True)
class SandboxSettings:
    mode: str = "sandbox"  # sandbox | off
    cpu_s: int = 10
    memory_mb: int = 512
    timeout_s: float = 30.0
    max_output_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls) -> SandboxSettings:
        """From the runner's settings (runner_service/settings.py: read, and bounds checked, once)."""
        config = current()
        return cls(
            mode=config.code_nodes,
            cpu_s=config.sandbox_cpu_s,
            memory_mb=config.sandbox_memory_mb,
            timeout_s=config.sandbox_timeout_s,
        )

    def limits(self) -> dict[str, int]:
        return {
            "cpu_s": self.cpu_s,
            "memory_bytes": self.memory_mb * 1024 * 1024,
            "max_output_bytes": self.max_output_bytes,
        }


class SandboxClient:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self.isolation: dict[str, Any] = {}
        self.started = 0

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.close()
        args = [sys.executable, "-I", "-c", _BOOT, json.dumps([p for p in sys.path if p])]
        # env={}: nothing of the runner's environment (tokens, keys) exists in the sandbox.
        # start_new_session: the fork server and its children form one process group to kill.
        self._proc = subprocess.Popen(
            args,
            env={},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )
        self.started += 1
        hello = self._read(self._proc, time.monotonic() + 60.0, None)
        if hello is None or not hello.get("ready"):
            self.close()
            raise SandboxLimit("the code sandbox did not start")
        self.isolation = {k: v for k, v in hello.items() if k != "ready"}
        if self.started == 1:
            log.info("sandbox_started", **self.isolation)
        return self._proc

    def call(
        self,
        request: dict[str, Any],
        cancelled: Callable[[], bool] | None = None,
        on_slow: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The reply ({"ok", "result"} or {"ok": False, "kind", "error"}); raises SandboxStop on a
        wall-clock timeout or a cancel (the process group is killed first)."""
        proc = self._ensure()
        payload = json.dumps({**request, "limits": self.settings.limits()}, default=str).encode()
        assert proc.stdin is not None
        try:
            proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            proc.stdin.flush()
        except OSError:
            self.close()
            raise SandboxLimit("the code sandbox died") from None
        deadline = time.monotonic() + self.settings.timeout_s
        reply = self._read(proc, deadline, cancelled, on_slow)
        if reply is None:
            self.close()
            raise SandboxLimit("the code sandbox died")
        return reply

    def _read(
        self,
        proc: subprocess.Popen[bytes],
        deadline: float,
        cancelled: Callable[[], bool] | None,
        on_slow: Callable[[], None] | None = None,
    ) -> dict[str, Any] | None:
        assert proc.stdout is not None
        slow_at = time.monotonic() + SLOW_S
        fd = proc.stdout.fileno()
        buffer = b""
        need = _HEADER.size
        header_done = False
        while True:
            while len(buffer) < need:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise SandboxLimit(f"wall-clock timeout ({self.settings.timeout_s:g} s) exceeded")
                ready, _, _ = select.select([fd], [], [], min(left, CANCEL_POLL_S))
                if not ready:
                    if on_slow is not None and time.monotonic() >= slow_at:
                        on_slow()
                        on_slow = None
                    if cancelled is not None and cancelled():
                        self.close()
                        raise SandboxCancelled("the run was cancelled while its code ran")
                    continue
                chunk = os.read(fd, max(need - len(buffer), 1 << 16))
                if not chunk:
                    return None
                buffer += chunk
            if header_done:
                return json.loads(buffer[:need])
            (size,) = _HEADER.unpack(buffer[: _HEADER.size])
            buffer = buffer[_HEADER.size :]
            need = size
            header_done = True

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_local = threading.local()


def thread_client(settings: SandboxSettings) -> SandboxClient:
    """This thread's sandbox (a worker thread's code nodes run one at a time)."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = SandboxClient(settings)
    return client


def close_thread_client() -> None:
    client = getattr(_local, "client", None)
    if client is not None:
        client.close()
        _local.client = None
