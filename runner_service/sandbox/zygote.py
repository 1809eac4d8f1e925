"""The sandbox process: started by the runner with an empty environment, it isolates itself once
(no network, no privileges) and then forks one short-lived child per code execution.

Why a fork server: a fresh interpreter that imports RestrictedPython and abstractruntime's sandbox
costs hundreds of milliseconds; a fork of this already-loaded one costs about a millisecond, and
each child gets its own CPU-time and memory limits (RLIMIT_CPU accumulates per process, so a child
per execution is what makes the limit per node). A child that exceeds a limit dies (SIGXCPU,
SIGKILL, MemoryError); the runner enforces the wall-clock timeout and cancellation by killing this
whole process group.

Isolation, in order (each step reported back to the runner, which logs it once):
- root: `unshare(CLONE_NEWNET)` — a network namespace with only a down loopback, so no socket can
  reach anything — then every privilege is dropped to uid/gid 65534 (nobody): the db and artifacts
  (0600/0700, owned by the gateway's user) are unreadable even to code that escaped RestrictedPython.
- not root: `unshare(CLONE_NEWUSER | CLONE_NEWNET)` when the kernel allows unprivileged user
  namespaces; where it does not, the network stays reachable and `network` says so (the sandbox
  still refuses every network module by name and by the attribute guard).
- always: RLIMIT_FSIZE 0 (no file can be written), RLIMIT_CORE 0, PR_SET_NO_NEW_PRIVS, and
  PR_SET_PDEATHSIG so nothing outlives the runner.

Protocol on stdin/stdout: 4-byte big-endian length + JSON, one reply per request.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
NOBODY = 65534
_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_frame(stream: BinaryIO, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    _libc().prctl(option, value, 0, 0, 0)


def isolate() -> dict[str, Any]:
    """Cut the network and drop privileges; returns what was achieved (for the runner's log)."""
    libc = _libc()
    report: dict[str, Any] = {"uid": os.getuid()}
    if os.geteuid() == 0:
        if libc.unshare(CLONE_NEWNET) == 0:
            report["network"] = "isolated (network namespace)"
        else:
            report["network"] = f"NOT isolated: unshare failed ({os.strerror(ctypes.get_errno())})"
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        report["uid"] = os.getuid()
    elif libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        report["network"] = "isolated (user + network namespace)"
    else:
        report["network"] = (
            f"NOT isolated: no unprivileged user namespaces ({os.strerror(ctypes.get_errno())}); "
            "network modules stay refused by the sandbox"
        )
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return report


# Compiled code-node handlers, kept in the fork server: compiling (RestrictedPython's AST pass,
# which runs none of the code) is most of a small node's cost, and each fork inherits the cache.
_compiled: dict[tuple[str, str], Any] = {}
_COMPILED_MAX = 256


def _code_handler(request: dict[str, Any]) -> Any:
    from abstractruntime.visualflow_compiler.visual import code_executor

    key = (str(request["code"]), str(request.get("function") or "transform"))
    handler = _compiled.get(key)
    if handler is None:
        handler = code_executor.create_code_handler(key[0], key[1], permissions="sandbox")
        if len(_compiled) >= _COMPILED_MAX:
            _compiled.clear()
        _compiled[key] = handler
    return handler


def execute(request: dict[str, Any]) -> Any:
    """Run one request in this (child) process; returns the JSON-able result or raises."""
    from abstractruntime.visualflow_compiler.visual import code_executor, function_library

    op = request.get("op")
    if op == "code":
        return _code_handler(request)(request.get("input"))
    library = function_library.compile_function_library(request.get("functions"))
    if op == "library_compile":
        return sorted(library)
    if op == "library_call":
        name = str(request.get("name"))
        result = library[name](*request.get("args", ()), **request.get("kwargs", {}))
        return code_executor.ensure_json_result(result, name)
    raise ValueError(f"unknown sandbox request {op!r}")


def _child(request: dict[str, Any], out_fd: int) -> None:
    """In the forked child: limit, run, write the reply, exit — never return."""
    limits = request.get("limits") or {}
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        cpu = max(1, int(limits.get("cpu_s", 10)))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # soft: SIGXCPU; hard: SIGKILL
        memory = int(limits.get("memory_bytes", 512 * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        try:
            try:
                reply: dict[str, Any] = {"ok": True, "result": execute(request)}
            except MemoryError:
                raise
            except RecursionError as exc:
                reply = {"ok": False, "kind": "error", "error": f"RecursionError: {exc}"}
            except BaseException as exc:  # the author's error: reported, the node fails
                if isinstance(exc.__cause__, MemoryError):  # abstractruntime wraps it in its own error
                    raise exc.__cause__ from None
                reply = {"ok": False, "kind": "error", "error": str(exc) or type(exc).__name__}
        except MemoryError:
            reply = {"ok": False, "kind": "limit", "error": f"memory limit ({memory >> 20} MB) exceeded"}
        data = json.dumps(reply, default=str).encode()
        cap = int(limits.get("max_output_bytes", 16 * 1024 * 1024))
        if len(data) > cap:
            reply = {"ok": False, "kind": "error", "error": f"result is {len(data)} bytes, over {cap}"}
            data = json.dumps(reply).encode()
        view = memoryview(data)
        while view:
            written = os.write(out_fd, view)
            view = view[written:]
    except MemoryError:
        os.write(out_fd, b'{"ok": false, "kind": "limit", "error": "memory limit exceeded"}')
    finally:
        os._exit(0)


def _run_one(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("op") == "code":
        try:
            _code_handler(request)  # compiled here, once, so that every later fork has it
        except Exception as exc:  # a refusal (syntax, imports, dunders): the node fails with it
            return {"ok": False, "kind": "error", "error": str(exc) or type(exc).__name__}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(request, write_fd)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 1 << 16):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if data:
        try:
            return json.loads(data)
        except ValueError:
            pass
    cpu = (request.get("limits") or {}).get("cpu_s", 10)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL):
        return {"ok": False, "kind": "limit", "error": f"CPU time limit ({cpu} s) exceeded"}
    return {"ok": False, "kind": "limit", "error": f"the sandboxed code died (wait status {status})"}


def main() -> None:
    runner = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    from runner_service.sandbox import guards

    guards.install()
    import abstractruntime.visualflow_compiler.visual.code_executor  # noqa: F401  (loaded before the fork)

    report = isolate()
    # Again after isolate(): a change of credentials (setuid to nobody) clears the parent-death signal,
    # and without it a killed runner left this server and a spinning node child running forever.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != runner:  # the runner died before the signal was armed again
        os._exit(0)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    write_frame(stdout, json.dumps({"ready": True, **report}).encode())
    while (frame := read_frame(stdin)) is not None:
        write_frame(stdout, json.dumps(_run_one(json.loads(frame))).encode())
