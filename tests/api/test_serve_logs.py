"""Both processes log through one configuration: every stderr line of a real `serve` (Hypercorn, its
stdlib loggers, ours) and of the runner it supervises is a JSON object with event / level / timestamp /
logger, and none carries the bearer token."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from shared_store import Database, migrate

from .conftest import TOKEN, free_port
from .test_serve_cli import SERVE, _env
from .test_supervision import _health, _wait


def _lines(log: Path) -> list[dict]:
    parsed = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"stderr line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict), line
        missing = {"event", "level", "timestamp", "logger"} - set(entry)
        assert not missing, f"line {number} lacks {missing}: {line}"
        parsed.append(entry)
    return parsed


def test_serve_and_its_runner_write_json_lines_only(tmp_path: Path, flows: Path) -> None:
    # A flows dir with a file that is not a bundle: the API (import) and the runner (load) both warn.
    own_flows = tmp_path / "flows"
    own_flows.mkdir()
    for name in ("bench-echo@1.0.0.flow",):
        shutil.copy(flows / name, own_flows / name)
    (own_flows / "broken.json").write_text("{ not json")
    db_path = tmp_path / "data" / "g.sqlite3"
    database = Database(db_path)
    migrate(database)
    database.close()
    port = free_port()
    log = tmp_path / "serve.log"
    args = [*SERVE, "--port", str(port), "--db", str(db_path), "--flows-dir", str(own_flows)]
    with log.open("wb") as out:  # the runner child writes to serve's stderr: one file for both
        # The runner's error: a run whose output is over the cap fails (logged as an error).
        env = _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_MAX_OUTPUT_BYTES="4000")
        process = subprocess.Popen(args, env=env, stderr=out)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client:
            first = _wait(lambda: (_health(client).get("runner_supervisor") or {}).get("pid"), "a runner")
            body = {"bundle_id": "bench-echo", "input_data": {"message": "x" * 5000}}
            started = client.post("/api/gateway/runs/start", json=body)
            assert started.status_code == 200, started.text
            run_id = started.json()["run_id"]
            _wait(lambda: client.get(f"/api/gateway/runs/{run_id}").json()["status"] == "failed", "failed")
            assert (
                client.get("/api/gateway/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
            )
            # The API side's warning: its runner dies and is restarted.
            subprocess.run(["kill", "-KILL", str(first)], check=True)
            _wait(
                lambda: (_health(client).get("runner_supervisor") or {}).get("pid") not in (None, first),
                "a restarted runner",
            )
            _wait(lambda: "runner_started" in log.read_text().split("restarted", 1)[-1], "the new runner up")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-3000:]

    entries = _lines(log)
    text = log.read_text()
    assert TOKEN not in text and "wrong" not in text
    by_logger: dict[str, set[str]] = {}
    for entry in entries:
        by_logger.setdefault(entry["logger"], set()).add(entry["event"].split(":")[0])
    # Hypercorn's own lines, ours through stdlib logging, the runner's structlog events.
    assert any(name.startswith("hypercorn") for name in by_logger), by_logger
    assert any(e["logger"] == "abstractgateway.serve" and "serving on" in e["event"] for e in entries)
    api_warnings = [
        e for e in entries if e["logger"].startswith("abstractgateway") and e["level"] == "warning"
    ]
    assert any("flows dir" in e["event"] for e in api_warnings), api_warnings
    assert any("restarting it in" in e["event"] for e in api_warnings), api_warnings
    runner_errors = [e for e in entries if e["logger"] == "runner" and e["level"] == "error"]
    assert any(e["event"] == "output_too_large" and e.get("run_id") == run_id for e in runner_errors), entries
    assert any(e["event"] == "bundle_not_loaded" for e in entries if e["logger"] == "runner")
    assert all(e["timestamp"].endswith("Z") for e in entries)


def _stderr_lines(code: str) -> list[dict]:
    """The JSON lines a Python process running `code` wrote on its stderr (a file, not a terminal)."""
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in done.stderr.splitlines()]


def test_tracebacks_warnings_and_uncaught_errors_are_json_lines_too() -> None:
    """Both paths (structlog's loggers, stdlib ones) render an exception into the line; a warning and
    an uncaught exception in a thread become lines too, instead of raw text on stderr."""
    code = (
        "import logging, threading, warnings, structlog\n"
        "from shared_store.logs import configure_logging\n"
        "configure_logging('debug')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    structlog.get_logger('runner').exception('native_failed', run_id='r1')\n"
        "    logging.getLogger('hypercorn.error').exception('stdlib failed')\n"
        "warnings.warn('careful')\n"
        "t = threading.Thread(target=lambda: {}['missing']); t.start(); t.join()\n"
        "structlog.get_logger('api').debug('quiet_enough')\n"
    )
    lines = _stderr_lines(code)
    assert [(e["logger"], e["level"]) for e in lines] == [
        ("runner", "error"),
        ("hypercorn.error", "error"),
        ("py.warnings", "warning"),
        ("abstractgateway.uncaught", "error"),
        ("api", "debug"),
    ], lines
    assert all("ZeroDivisionError" in e["exception"] for e in lines[:2])
    assert "KeyError" in lines[3]["exception"] and lines[0]["run_id"] == "r1"


def test_a_hot_line_is_the_line_structlog_writes() -> None:
    """The request line's direct writer (HotLine) and structlog render one event alike: the same keys
    in the same order, the same values but the time; below the level it writes nothing."""
    code = (
        "import logging, structlog\n"
        "from shared_store.logs import HotLine, bind_fields, configure_logging\n"
        "configure_logging('info')\n"
        "bind_fields(request_id='req-1')\n"
        "fields = dict(method='POST', path='/p', route='/p', status=201, duration_ms=1.25)\n"
        "structlog.get_logger('api').info('request', **fields)\n"
        "HotLine('api')(logging.INFO, 'request', **fields)\n"
        "HotLine('api')(logging.DEBUG, 'request', **fields)\n"
        "HotLine('api')(logging.ERROR, 'request', **fields)\n"
        "assert HotLine('api').enabled(logging.INFO) and not HotLine('api').enabled(logging.DEBUG)\n"
    )
    native, hot, error = _stderr_lines(code)
    assert list(hot) == list(native) and native["request_id"] == "req-1"
    assert {**hot, "timestamp": None} == {**native, "timestamp": None}
    assert hot["timestamp"].endswith("Z") and error["level"] == "error"
