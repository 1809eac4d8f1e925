"""Code nodes from a hostile client, replayed against real runner processes: refused or bounded,
while ordinary code and unrelated runs keep working."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shared_store.bundles import put_bundle
from shared_store.codec import decode
from shared_store.inbox import append_command
from tests.hostile_flows import chain_bundle, code_bundle
from tests.runner.conftest import Gateway

SPIN = "def transform(_input):\n    while True:\n        pass"


def _failed_output(view: dict) -> str:
    assert view["status"] == "completed" and view["output_failed"] == 1, view
    return str(view["output"]["error"])


def test_module_attribute_hole_is_closed_and_benign_code_computes(gateway: Gateway) -> None:
    put_bundle(
        gateway.db,
        code_bundle("ok", "import math\ndef transform(_input):\n    return {'v': math.isqrt(1764)}"),
    )
    put_bundle(
        gateway.db,
        code_bundle("attr", "import shlex\ndef transform(_input):\n    return dict(shlex.os.environ)"),
    )
    put_bundle(
        gateway.db,
        code_bundle("from", "from shlex import os\ndef transform(_input):\n    return os.system('id')"),
    )
    put_bundle(
        gateway.db,
        code_bundle("deep", "import email.utils\ndef transform(_input):\n    return email.utils.os.getcwd()"),
    )
    put_bundle(gateway.db, code_bundle("full", "def transform(_input):\n    return 1"))  # fmt: skip
    runs = {name: gateway.start(name) for name in ("ok", "attr", "from", "deep")}
    gateway.runner(ABSTRACTGATEWAY_AUTH_TOKEN="secret-token-value")
    ok = gateway.wait_status(runs["ok"], "completed", "failed")
    assert ok["output"]["result"] == {"v": 42} and ok["output_failed"] == 0
    for name in ("attr", "from", "deep"):
        error = _failed_output(gateway.wait_status(runs[name], "completed", "failed"))
        assert "module 'os'" in error and "refuses" in error, error
    for name in runs:
        assert "secret-token-value" not in str(gateway.run(name if False else runs[name]))


def test_sandbox_is_isolated_from_network_environment_and_privileges(gateway: Gateway) -> None:
    gateway.runner()
    put_bundle(gateway.db, code_bundle("probe", "def transform(_input):\n    return 1"))
    gateway.wait_status(gateway.start("probe"), "completed")
    started = [e for e in gateway.runners[0].events() if e.get("event") == "sandbox_started"]
    assert started, "the sandbox reports how it isolated itself"
    if os.geteuid() == 0:
        assert started[0]["uid"] == 65534
        assert started[0]["network"].startswith("isolated"), started[0]
    else:
        assert "network" in started[0]


def test_infinite_loop_fails_the_run_and_an_unrelated_run_completes(gateway: Gateway) -> None:
    put_bundle(gateway.db, code_bundle("spin", SPIN))
    spin = gateway.start("spin")
    echo = gateway.start("bench-echo", {"message": "still served"})
    gateway.runner(ABSTRACTGATEWAY_SANDBOX_CPU_S="1")
    failed = gateway.wait_status(spin, "completed", "failed", timeout=120)
    assert failed["status"] == "failed"
    assert failed["error"] == "code node over its limit: CPU time limit (1 s) exceeded"
    done = gateway.wait_status(echo, "completed", "failed", timeout=120)
    assert done["status"] == "completed" and done["output"]["result"] == "still served"


def test_an_unrelated_run_completes_while_a_code_node_spins(gateway: Gateway) -> None:
    put_bundle(gateway.db, code_bundle("spin", SPIN))
    spin = gateway.start("spin")
    runner = gateway.runner(ABSTRACTGATEWAY_SANDBOX_CPU_S="600", ABSTRACTGATEWAY_SANDBOX_TIMEOUT_S="600")
    gateway.wait(
        lambda: any(e.get("event") == "spare_worker_started" for e in runner.events()),
        "the runner to serve others while the only worker waits on the code node",
    )
    echo = gateway.start("bench-echo", {"message": "served meanwhile"})
    assert gateway.wait_status(echo, "completed")["output"]["result"] == "served meanwhile"
    assert gateway.run(spin)["status"] == "running", "the spinning node is still running"
    append_command(gateway.db, command_id="end-spin", run_id=spin, type="cancel", payload={})
    assert gateway.wait_status(spin, "cancelled", "failed")["status"] == "cancelled"


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_runner_leaves_no_sandbox_behind(gateway: Gateway) -> None:
    """SIGKILL of the runner while a node spins: its sandbox server and the node's process die with it
    (the parent-death signal must survive the sandbox's switch to another user)."""
    put_bundle(gateway.db, code_bundle("spin", SPIN))
    gateway.start("spin")
    runner = gateway.runner(ABSTRACTGATEWAY_SANDBOX_CPU_S="600", ABSTRACTGATEWAY_SANDBOX_TIMEOUT_S="600")
    gateway.wait(lambda: len(_descendants(runner.proc.pid)) >= 2, "the sandbox server and its node child")
    sandbox = _descendants(runner.proc.pid)
    runner.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in sandbox):
        time.sleep(0.1)
    assert not [pid for pid in sandbox if _alive(pid)], "sandbox processes outlived their runner"


def test_memory_and_wall_clock_limits_fail_the_run_with_the_reason(gateway: Gateway) -> None:
    put_bundle(gateway.db, code_bundle("hog", "def transform(_input):\n    return len('x' * (2 ** 31))"))
    put_bundle(gateway.db, code_bundle("slow", "def transform(_input):\n    total = 0\n    for i in range(10 ** 12):\n        total += i\n    return total"))  # fmt: skip
    hog, slow = gateway.start("hog"), gateway.start("slow")
    gateway.runner(ABSTRACTGATEWAY_SANDBOX_MEMORY_MB="256", ABSTRACTGATEWAY_SANDBOX_TIMEOUT_S="1")
    assert gateway.wait_status(hog, "failed", timeout=120)["error"] == (
        "code node over its limit: memory limit (256 MB) exceeded"
    )
    assert gateway.wait_status(slow, "failed", timeout=120)["error"] == "wall-clock timeout (1 s) exceeded"


def test_cancel_kills_a_run_stuck_in_a_code_node(gateway: Gateway) -> None:
    put_bundle(gateway.db, code_bundle("spin", SPIN))
    spin = gateway.start("spin")
    runner = gateway.runner(ABSTRACTGATEWAY_SANDBOX_CPU_S="600", ABSTRACTGATEWAY_SANDBOX_TIMEOUT_S="600")
    gateway.wait(
        lambda: any(e.get("event") == "sandbox_started" for e in runner.events()), "the code node to run"
    )
    append_command(gateway.db, command_id="stop-spin", run_id=spin, type="cancel", payload={})
    # Far under the 600 s limits: the sandbox was killed for the cancel, not for a limit.
    view = gateway.wait_status(spin, "cancelled", "failed", timeout=60)
    assert view["status"] == "cancelled"
    assert gateway.command("stop-spin")[0] == "applied"
    echo = gateway.start("bench-echo", {"message": "after"})
    assert gateway.wait_status(echo, "completed")["output"]["result"] == "after"


def test_a_run_that_stalls_its_runner_three_times_is_failed_as_poison(gateway: Gateway) -> None:
    """The tick watchdog stops a runner whose worker stays on one run too long (exit 70); the claim
    ends without a release. The 4th claim fails the run instead of stalling a 4th runner."""
    put_bundle(gateway.db, code_bundle("spin", SPIN))
    spin = gateway.start("spin")
    env = {
        "ABSTRACTGATEWAY_TICK_TIMEOUT_S": "1",
        "ABSTRACTGATEWAY_SANDBOX_CPU_S": "600",
        "ABSTRACTGATEWAY_SANDBOX_TIMEOUT_S": "600",
    }
    for attempt in range(3):
        runner = gateway.runner(f"stall{attempt}", lease_s=1.0, **env)
        assert runner.proc.wait(120) == 70
        runner._log.close()
        assert any(e.get("event") == "tick_timeout" for e in runner.events())
    gateway.runner("last", lease_s=1.0, **env)
    view = gateway.wait_status(spin, "failed", timeout=120)
    assert view["error"].startswith("poison run: its tick killed or timed out the runner 3 times"), view
    echo = gateway.start("bench-echo", {"message": "served"})
    assert gateway.wait_status(echo, "completed")["status"] == "completed"


def test_flow_functions_run_in_the_sandbox(gateway: Gateway) -> None:
    double = [{"name": "double", "code": "def double(x):\n    return x * 2"}]
    leak = [{"name": "leak", "code": "def leak(x):\n    import shlex\n    return shlex.os.getcwd()"}]
    step = (
        "code",
        {"code": "def transform(_input):\n    return 21", "functionName": "transform"},
        ["output"],
    )
    for name, functions, expression in (("fn", double, "double(value)"), ("fnleak", leak, "leak(value)")):
        bundle = chain_bundle(name, [(step[0], dict(step[1]), step[2])], functions=functions)
        put_bundle(gateway.db, _with_end_expression(bundle, expression))
    ok, bad = gateway.start("fn"), gateway.start("fnleak")
    gateway.runner()
    assert gateway.wait_status(ok, "completed", "failed")["output"]["result"] == 42
    failed = gateway.wait_status(bad, "completed", "failed")
    assert "module 'os'" in str(failed["error"] or failed["output"]), failed


def _with_end_expression(bundle: bytes, expression: str) -> bytes:
    """The bundle with a pin expression on the end node's `result` pin."""
    import io
    import json
    import zipfile

    with zipfile.ZipFile(io.BytesIO(bundle)) as source:
        manifest, flow = source.read("manifest.json"), json.loads(source.read("flows/main.json"))
    for node in flow["nodes"]:
        if node["id"] == "end":
            node["data"]["pinExpressions"] = {"result": expression}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("manifest.json", manifest)
        out.writestr("flows/main.json", json.dumps(flow))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "path", ["/proc/self/environ", "/etc/os-release", "../../gateway.sqlite3", "link/os-release"]
)
def test_file_nodes_stay_in_the_run_workspace(gateway: Gateway, tmp_path: Path, path: str) -> None:
    put_bundle(gateway.db, chain_bundle("steal", [
        ("read_file", {"pinDefaults": {"file_path": path}, "_inputs": ["file_path"]}, ["content"]),
    ]))  # fmt: skip
    put_bundle(gateway.db, chain_bundle("export", [
        ("import_workspace_file", {"pinDefaults": {"file_path": path}, "_inputs": ["file_path"]}, ["artifact"]),
    ]))  # fmt: skip
    steal = gateway.start("steal", {"workspace_root": "/", "workspace_access_mode": "all_except_ignored"})
    export = gateway.start("export", {"workspaceAllowedPaths": ["/etc", "/proc"]})
    for run_id in (steal, export):  # a link planted in the workspace, pointing out of it
        folder = tmp_path / "workspaces" / run_id
        folder.mkdir(parents=True)
        (folder / "link").symlink_to("/etc")
    gateway.runner()
    for run_id in (steal, export):
        error = _failed_output(gateway.wait_status(run_id, "completed", "failed"))
        assert "workspace" in error, error
    # Nothing exported: the only artifacts are the workflow snapshots every run keeps of itself.
    kinds = [
        decode(m).get("tags", {}).get("kind") for (m,) in gateway.db.query("SELECT metadata FROM artifacts")
    ]
    assert [k for k in kinds if k != "workflow_snapshot"] == []


def test_file_nodes_write_and_read_inside_the_workspace(gateway: Gateway, tmp_path: Path) -> None:
    put_bundle(gateway.db, chain_bundle("files", [
        ("write_file", {"pinDefaults": {"file_path": "notes/a.txt", "content": "hello"},
                        "_inputs": ["file_path", "content"]}, ["file_path"]),
        ("read_file", {"pinDefaults": {"file_path": "notes/a.txt"}, "_inputs": ["file_path"]}, ["content"]),
    ]))  # fmt: skip
    run_id = gateway.start("files", {"workspace_root": str(tmp_path / "elsewhere")})
    gateway.runner()
    assert gateway.wait_status(run_id, "completed")["output"]["result"] == "hello"
    workspace = tmp_path / "workspaces" / run_id
    assert (workspace / "notes" / "a.txt").read_text() == "hello"
    assert not (tmp_path / "elsewhere").exists(), "the client's workspace_root is ignored"
    assert (workspace.stat().st_mode & 0o777) == 0o700


def test_code_nodes_off_refuses_to_run_code(gateway: Gateway) -> None:
    put_bundle(gateway.db, code_bundle("ok", "def transform(_input):\n    return 1"))
    run_id = gateway.start("ok")
    gateway.runner(ABSTRACTGATEWAY_CODE_NODES="off")
    view = gateway.wait_status(run_id, "failed")
    assert "ABSTRACTGATEWAY_CODE_NODES=off" in view["error"] and "code node 'n0'" in view["error"]
    echo = gateway.start("bench-echo", {"message": "fine"})
    assert gateway.wait_status(echo, "completed")["status"] == "completed"
    time.sleep(0)  # nothing else: the refusal is the whole answer
