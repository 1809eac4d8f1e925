"""Chaos for the API process: SIGKILL mid-burst, a full disk, a db that cannot be written.

- SIGKILL: a real `serve --no-runner` takes a burst of starts (some with an Idempotency-Key) and
  commands from many concurrent clients and is killed at a random moment; every request that was
  answered 2xx must be in the db when it is opened afterwards (WAL recovery). `CHAOS_TRIALS` kills
  (default 5; the long form e.g. CHAOS_TRIALS=200).
- Disk full: the db lives on a small tmpfs that a filler file fills up. Writes answer 503 with the
  reason (never 500, never a hang), reads keep working, a runner keeps running, nothing is corrupt
  (`PRAGMA integrity_check`), and both processes resume once the filler is gone, without a restart.
  Needs root (mount); skipped with the reason otherwise.
- Read-only db: `chattr +i` on the db and its WAL makes every write of the serving process fail (root
  ignores file modes, and a read-only remount is refused while the process holds the files open).
  Same promises. Skipped where the file system or the user cannot do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shared_store import Database, migrate
from shared_store.bundles import import_flows_dir

from ..api.conftest import TOKEN, free_port

TRIALS = int(os.environ.get("CHAOS_TRIALS", "5"))
CLIENTS = 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = ("completed", "failed", "cancelled")
LEASE_S = 2.0

pytestmark = pytest.mark.slow


# --- processes ---------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    env["ABSTRACTGATEWAY_AUTH_TOKEN"] = TOKEN
    return env


def _serve(db_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "abstractgateway", "serve", "--port", str(port), "--db", str(db_path)]
    with log.open("ab") as out:
        return subprocess.Popen([*args, "--no-runner"], env=_env(), stdout=out, stderr=out)


def _runner(db_path: Path, log: Path, lease_s: float = 30.0) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "abstractgateway", "runner", "--db", str(db_path), "--poll-s", "0.01"]
    args += ["--lease-s", str(lease_s)]
    with log.open("ab") as out:
        return subprocess.Popen(args, env=_env(), stdout=out, stderr=out)


def _wait_serving(log: Path, process: subprocess.Popen[bytes], mark: int = 0) -> None:
    """Wait for this process's 'serving on' line (`mark`: the log size before it started)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "serving on" in log.read_text(errors="replace")[mark:]:
            return
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.01)
    raise AssertionError(f"no 'serving on' in {log}")


def _stop(process: subprocess.Popen[bytes] | None) -> int | None:
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _fresh_db(db_path: Path, flows: Path) -> None:
    db = Database(db_path, checkpoint_every_s=None)
    try:
        migrate(db)
        assert import_flows_dir(db, flows) == []
    finally:
        db.close()


def _integrity(db_path: Path) -> str:
    db = Database(db_path, checkpoint_every_s=None)
    try:
        return "; ".join(str(row[0]) for row in db.query("PRAGMA integrity_check"))
    finally:
        db.close()


# --- 1. SIGKILL the API mid-burst --------------------------------------------------------------------
@dataclass
class Acks:
    """What the clients were told (2xx only) and what they could not know (killed in flight)."""

    runs: set[str] = field(default_factory=set)
    keyed: dict[str, tuple[str, dict]] = field(default_factory=dict)  # key -> (run_id, body)
    commands: dict[str, tuple[str, int, dict]] = field(default_factory=dict)  # id -> (run_id, seq, body)
    requests: int = 0
    unanswered: int = 0  # transport errors: the kill cut these off
    other: list[tuple[int, str]] = field(default_factory=list)  # any non-2xx answer


async def _client(
    url: str, trial: int, index: int, acks: Acks, rng: random.Random, cap: int, stop: asyncio.Event
) -> None:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=20) as client:
        n = 0
        while not stop.is_set() and acks.requests < cap:
            n += 1
            ident = f"t{trial}-c{index}-{n}-{rng.getrandbits(32):08x}"
            acked_runs = list(acks.runs)
            acks.requests += 1
            try:
                if acked_runs and rng.random() < 0.45:
                    run_id = rng.choice(acked_runs)
                    body = {"command_id": ident, "run_id": run_id, "type": rng.choice(("pause", "resume"))}
                    body["payload"] = {}
                    response = await client.post("/api/gateway/commands", json=body)
                    if response.status_code == 200:
                        seq = int(response.json()["seq"])
                        acks.commands[ident] = (run_id, seq, body)
                    else:
                        acks.other.append((response.status_code, response.text))
                    continue
                body = {"bundle_id": "bench-echo", "input_data": {"message": ident, "pad": "x" * 200}}
                keyed = rng.random() < 0.4
                headers = {"Idempotency-Key": ident} if keyed else {}
                response = await client.post("/api/gateway/runs/start", json=body, headers=headers)
                if response.status_code == 200:
                    run_id = response.json()["run_id"]
                    acks.runs.add(run_id)
                    if keyed:
                        acks.keyed[ident] = (run_id, body)
                else:
                    acks.other.append((response.status_code, response.text))
            except httpx.TransportError:
                acks.unanswered += 1
                return  # the server is gone


async def _burst_and_kill(url: str, pid: int, trial: int, rng: random.Random) -> tuple[Acks, int]:
    acks = Acks()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_client(url, trial, i, acks, random.Random(rng.random()), 20_000, stop))
        for i in range(CLIENTS)
    ]
    # Kill at a random moment once the burst is in full swing (some answers already given).
    threshold = rng.randint(10, 200)
    deadline = time.monotonic() + 30
    while len(acks.runs) + len(acks.commands) < threshold and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    await asyncio.sleep(rng.uniform(0.0, 0.3))
    acked_at_kill = len(acks.runs) + len(acks.commands)
    os.kill(pid, signal.SIGKILL)
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    finally:
        stop.set()
    return acks, acked_at_kill


def _check_acks_in_db(db_path: Path, acks: Acks) -> None:
    db = Database(db_path, checkpoint_every_s=None)  # a fresh open: WAL recovery after the kill
    try:
        runs = {
            row[0]: row[1]
            for row in db.query(
                "SELECT r.run_id, s.start_json IS NOT NULL FROM runs r JOIN run_states s USING (run_id)"
            )
        }
        missing = sorted(acks.runs - runs.keys())
        assert not missing, f"{len(missing)} acknowledged starts lost: {missing[:5]}"
        assert all(runs[run_id] for run_id in acks.runs), "a queued run lost its start request"
        keys = dict(db.query("SELECT idempotency_key, run_id FROM run_start_keys"))
        for key, (run_id, _) in acks.keyed.items():
            assert keys.get(key) == run_id, f"Idempotency-Key {key}: db has {keys.get(key)}, told {run_id}"
        commands = {
            row[0]: (row[1], row[2]) for row in db.query("SELECT command_id, run_id, seq FROM commands")
        }
        for command_id, (run_id, seq, _) in acks.commands.items():
            assert commands.get(command_id) == (run_id, seq), (
                f"command {command_id}: db has {commands.get(command_id)}, told {(run_id, seq)}"
            )
        check = db.query("PRAGMA integrity_check")
        assert check == [("ok",)], check
    finally:
        db.close()


def _replay(url: str, previous: Acks, rng: random.Random) -> int:
    """The new process answers what the killed one acknowledged: the same run, the same seq."""
    replayed = 0
    with httpx.Client(base_url=url, headers=AUTH, timeout=20) as client:
        for key, (run_id, body) in rng.sample(sorted(previous.keyed.items()), min(10, len(previous.keyed))):
            response = client.post("/api/gateway/runs/start", json=body, headers={"Idempotency-Key": key})
            assert response.status_code == 200, response.text
            assert response.json()["run_id"] == run_id
            replayed += 1
        sample = rng.sample(sorted(previous.commands.items()), min(10, len(previous.commands)))
        for _, (_, seq, body) in sample:
            response = client.post("/api/gateway/commands", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["duplicate"] is True and response.json()["seq"] == seq, response.text
            replayed += 1
    return replayed


def test_sigkill_mid_burst_loses_no_acknowledged_write(tmp_path: Path, flows: Path) -> None:
    db_path = tmp_path / "gateway.sqlite3"
    _fresh_db(db_path, flows)
    log = tmp_path / "serve.log"
    rng = random.Random(int(os.environ.get("CHAOS_SEED", str(random.randrange(1 << 30)))))
    previous: Acks | None = None
    totals = {"requests": 0, "acked": 0, "unanswered": 0, "replayed": 0, "kills": 0}
    for trial in range(TRIALS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        mark = log.stat().st_size if log.exists() else 0
        process = _serve(db_path, port, log)
        try:
            _wait_serving(log, process, mark)
            if previous is not None:
                totals["replayed"] += _replay(url, previous, rng)
            acks, acked_at_kill = asyncio.run(_burst_and_kill(url, process.pid, trial, rng))
            assert process.wait(30) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        totals["kills"] += 1
        assert not acks.other, f"non-2xx answers during the burst: {acks.other[:5]}"
        assert acked_at_kill > 0 and acks.unanswered > 0, "the kill did not land mid-burst"
        _check_acks_in_db(db_path, acks)
        totals["requests"] += acks.requests
        totals["acked"] += len(acks.runs) + len(acks.commands)
        totals["unanswered"] += acks.unanswered
        previous = acks
    print(f"api sigkill chaos: {totals}")


# --- disk full and read-only db ----------------------------------------------------------------------
@contextlib.contextmanager
def _small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("disk-full chaos needs root to mount a small tmpfs")
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _fill(path: Path) -> int:
    """Write `path` until the file system refuses (ENOSPC); returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 16, 4096, 512):
            block = b"\0" * chunk
            while True:
                try:
                    written += fh.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def _start(
    client: httpx.Client, bundle: str = "bench-echo", pad: int = 0, **input_data: object
) -> httpx.Response:
    body = {"bundle_id": bundle, "input_data": {**input_data, "pad": "p" * pad}}
    return client.post("/api/gateway/runs/start", json=body)


def _writes_until_refused(client: httpx.Client, acked: list[str], tries: int = 400) -> httpx.Response:
    """Start runs with large inputs until one is refused; every answer is 200 or 503, none hangs."""
    for _ in range(tries):
        response = _start(client, pad=64 * 1024)
        assert response.status_code in (200, 503), (response.status_code, response.text)
        if response.status_code == 503:
            return response
        acked.append(response.json()["run_id"])
    raise AssertionError(f"no write was refused in {tries} tries")


def _assert_refused_writes(client: httpx.Client, reason: str, acked: list[str]) -> None:
    refused = _writes_until_refused(client, acked)
    detail = refused.json()["detail"]
    assert reason in detail.lower(), detail
    assert refused.headers.get("retry-after"), refused.headers
    # Every kind of write is refused the same way, with the reason (a small one may still fit).
    some_run = acked[0]
    command = {"command_id": f"c-{time.monotonic_ns()}", "run_id": some_run, "type": "pause", "payload": {}}
    for response in (
        client.post("/api/gateway/commands", json=command),
        _start(client, pad=64 * 1024),
        _start(client, pad=64 * 1024),
    ):
        assert response.status_code in (200, 503), (response.status_code, response.text)
        if response.status_code == 503:
            assert reason in response.json()["detail"].lower(), response.text
    # Reads still work.
    health = client.get("/api/health")
    assert health.status_code == 200, health.text
    view = client.get(f"/api/gateway/runs/{some_run}")
    assert view.status_code == 200, view.text
    listing = client.get("/api/gateway/runs", params={"limit": 5})
    assert listing.status_code == 200, listing.text
    ledger = client.get(f"/api/gateway/runs/{some_run}/ledger")
    assert ledger.status_code == 200, ledger.text


def _assert_writes_resume(client: httpx.Client, acked: list[str]) -> None:
    deadline = time.monotonic() + 10
    statuses = []
    while time.monotonic() < deadline:
        response = _start(client, pad=64 * 1024)
        statuses.append(response.status_code)
        if response.status_code == 200:
            acked.append(response.json()["run_id"])
            break
        time.sleep(0.05)
    assert statuses[-1] == 200, f"writes did not resume: {statuses[-10:]}"
    assert statuses.count(503) <= 2, f"writes resumed only after {statuses.count(503)} refusals: {statuses}"
    for _ in range(20):
        response = _start(client, pad=1024)
        assert response.status_code == 200, response.text
        acked.append(response.json()["run_id"])


def _assert_acked_in_db(db_path: Path, acked: list[str]) -> None:
    db = Database(db_path, checkpoint_every_s=None)
    try:
        present = {row[0] for row in db.query("SELECT run_id FROM runs")}
        missing = [run_id for run_id in acked if run_id not in present]
        assert not missing, f"acknowledged starts missing: {missing[:5]}"
    finally:
        db.close()


def _ledger_dense(db_path: Path) -> None:
    db = Database(db_path, checkpoint_every_s=None)
    try:
        bad = db.query(
            "SELECT r.run_id, r.ledger_len, count(l.seq), max(l.seq) FROM runs r LEFT JOIN ledger l "
            "USING (run_id) GROUP BY r.run_id HAVING r.ledger_len != count(l.seq) "
            "OR r.ledger_len != coalesce(max(l.seq), 0)"
        )
        assert not bad, f"ledger not dense: {bad[:5]}"
    finally:
        db.close()


def test_disk_full_answers_503_and_resumes_when_space_returns(tmp_path: Path, flows: Path) -> None:
    with _small_tmpfs(tmp_path / "small", "8m") as small:
        db_path = small / "gateway.sqlite3"
        _fresh_db(db_path, flows)
        port = free_port()
        api = _serve(db_path, port, tmp_path / "serve.log")
        filler = small / "filler"
        acked: list[str] = []
        try:
            _wait_serving(tmp_path / "serve.log", api)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=20) as client:
                response = _start(client)
                assert response.status_code == 200, response.text
                acked.append(response.json()["run_id"])
                _fill(filler)
                _assert_refused_writes(client, "full", acked)
                assert _integrity_readonly(db_path) == "ok"
                filler.unlink()
                _assert_writes_resume(client, acked)
                # Twice: the first refusal left nothing behind that blocks the next outage.
                _fill(filler)
                _assert_refused_writes(client, "full", acked)
                filler.unlink()
                _assert_writes_resume(client, acked)
        finally:
            api_rc = _stop(api)
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
        assert api_rc == 0, _tail(tmp_path / "serve.log")
        assert "Traceback" not in _tail(tmp_path / "serve.log")
        assert _integrity(db_path) == "ok"
        _assert_acked_in_db(db_path, acked)


def test_runner_rides_out_a_full_disk(tmp_path: Path, flows: Path) -> None:
    """A runner busy writing when the disk fills, several times: it keeps running, fails no run for
    it, strands no lease, and every run moves on once space returns. SIGTERM on a full disk stops it
    without a traceback, and a new runner takes over once there is space."""
    with _small_tmpfs(tmp_path / "small", "32m") as small:
        db_path = small / "gateway.sqlite3"
        _fresh_db(db_path, flows)
        port = free_port()
        api = _serve(db_path, port, tmp_path / "serve.log")
        # A short lease: a lease the runner could not give back on the full disk expires within
        # the test's patience (and is then claimed again), as after a crash.
        runner: subprocess.Popen[bytes] | None = None
        successor: subprocess.Popen[bytes] | None = None
        filler = small / "filler"
        try:
            _wait_serving(tmp_path / "serve.log", api)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=20) as client:
                # Long ticks (200 effects each) queued, then the runner starts on a full disk.
                heavy: list[str] = []
                for _ in range(6):
                    response = _start(client, "chain-effects-200")
                    assert response.status_code == 200, response.text
                    heavy.append(response.json()["run_id"])
                _fill(filler)
                runner = _runner(db_path, tmp_path / "runner.log", lease_s=LEASE_S)
                time.sleep(2.5)
                filler.unlink()
                # Runs that write every 10 ms (emit_event + wait_until), more than one claim batch.
                ticking = []
                for _ in range(8):
                    response = _start(client, "bench-tick", n=1_000_000, delay=0.01)
                    assert response.status_code == 200, response.text
                    ticking.append(response.json()["run_id"])
                _wait_ledger_growth(client, ticking, timeout_s=30)  # the runner is up and busy
                for _ in range(3):
                    for _ in range(6):
                        response = _start(client, "chain-effects-200")
                        assert response.status_code == 200, response.text
                        heavy.append(response.json()["run_id"])
                    _fill(filler)
                    time.sleep(1.2)  # the runner meets the full disk (it backs off 1 s per store error)
                    assert runner.poll() is None, _tail(tmp_path / "runner.log")
                    assert _integrity_readonly(db_path) == "ok"
                    filler.unlink()
                    _wait_ledger_growth(client, ticking, timeout_s=LEASE_S + 10)  # none stranded
                    assert runner.poll() is None, _tail(tmp_path / "runner.log")
                    for run_id in ticking:
                        view = client.get(f"/api/gateway/runs/{run_id}").json()
                        assert view["status"] not in TERMINAL, (
                            f"a transient full disk ended run {run_id}: {view}"
                        )
                for run_id in heavy:
                    _wait_completed(client, run_id, timeout_s=30)
                _wait_completed(client, _start(client, message="after").json()["run_id"])
                # SIGTERM while the disk is full: it cannot give its leases back, but it stops.
                _fill(filler)
                time.sleep(0.5)
                runner.send_signal(signal.SIGTERM)
                stopped_rc = runner.wait(30)
                runner = None
                filler.unlink()
                successor = _runner(db_path, tmp_path / "runner2.log", lease_s=LEASE_S)
                _wait_ledger_growth(client, ticking, timeout_s=30)
                _wait_completed(client, _start(client, message="successor").json()["run_id"])
        finally:
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            _stop(runner)
            successor_rc = _stop(successor)
            api_rc = _stop(api)
        log = _tail(tmp_path / "runner.log")
        assert "Traceback" not in log, (
            f"the runner stopped on a full disk with a traceback (rc {stopped_rc}):\n{log}"
        )
        assert stopped_rc in (0, 1), log
        assert successor_rc == 0, _tail(tmp_path / "runner2.log")
        assert api_rc == 0, _tail(tmp_path / "serve.log")
        assert _integrity(db_path) == "ok"
        _ledger_dense(db_path)


def _immutable_works(probe: Path) -> str | None:
    """None when `chattr +i` makes writes through an already open file fail here; else why not."""
    if os.geteuid() != 0:
        return "chattr +i needs root (CAP_LINUX_IMMUTABLE); without it the owner can always write"
    with probe.open("wb", buffering=0) as fh:
        fh.write(b"x")
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"chattr +i failed here: {done.stderr.strip()}"
        try:
            fh.write(b"y")
        except OSError:
            return None
        finally:
            subprocess.run(["chattr", "-i", str(probe)], check=False)
            probe.unlink()
    return "this file system lets an open file be written after chattr +i (tmpfs does)"


def _chattr(flag: str, *paths: Path) -> None:
    for path in paths:
        if path.exists():
            subprocess.run(["chattr", flag, str(path)], check=True)


def test_read_only_db_answers_503_and_resumes_when_writable(tmp_path: Path, flows: Path) -> None:
    reason = _immutable_works(tmp_path / "probe")
    if reason is not None:
        pytest.skip(f"no way to make the db read-only for a root process: {reason}")
    db_path = tmp_path / "gateway.sqlite3"
    _fresh_db(db_path, flows)
    port = free_port()
    api = _serve(db_path, port, tmp_path / "serve.log")
    frozen = (db_path, db_path.with_name(db_path.name + "-wal"))
    try:
        _wait_serving(tmp_path / "serve.log", api)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=20) as client:
            acked: list[str] = []
            for _ in range(5):
                response = _start(client)
                assert response.status_code == 200, response.text
                acked.append(response.json()["run_id"])
            # Not the -shm: it is written through a shared mapping (that would be SIGBUS, not an error).
            _chattr("+i", *frozen)
            try:
                _assert_refused_writes(client, "unavailable", acked)
                assert _integrity_readonly(db_path) == "ok"
            finally:
                _chattr("-i", *frozen)
            _assert_writes_resume(client, acked)
    finally:
        _chattr("-i", *frozen)
        api_rc = _stop(api)
    assert api_rc == 0, _tail(tmp_path / "serve.log")
    assert _integrity(db_path) == "ok"
    _assert_acked_in_db(db_path, acked)


# --- helpers -----------------------------------------------------------------------------------------
def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _integrity_readonly(db_path: Path) -> str:
    """integrity_check through a read-only connection (works while the disk is full / files frozen)."""
    import apsw

    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def _wait_ledger_growth(client: httpx.Client, run_ids: list[str], timeout_s: float = 20) -> None:
    start = _ledger_lengths(client, run_ids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(now > before for now, before in zip(_ledger_lengths(client, run_ids), start, strict=True)):
            return
        time.sleep(0.05)
    raise AssertionError(f"ledgers did not grow: {start} -> {_ledger_lengths(client, run_ids)}")


def _ledger_lengths(client: httpx.Client, run_ids: list[str]) -> list[int]:
    out = []
    for run_id in run_ids:
        response = client.get(f"/api/gateway/runs/{run_id}")
        assert response.status_code == 200, response.text
        out.append(int(response.json().get("ledger_len") or 0))
    return out


def _wait_completed(client: httpx.Client, run_id: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    view: dict = {}
    while time.monotonic() < deadline:
        view = client.get(f"/api/gateway/runs/{run_id}").json()
        if view.get("status") in TERMINAL:
            break
        time.sleep(0.05)
    assert view.get("status") == "completed", (
        f"run {run_id}: {view.get('status')}, error {view.get('error')!r}"
    )
