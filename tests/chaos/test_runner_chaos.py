"""Chaos: the runner SIGKILLed at random points under load, and a SIGSTOPped runner fenced out.

1. One db, 50 runs of mixed bundles kept in flight (topped up as they finish), commands sent as the
   runs ask for them. Each trial starts a runner (short lease, so it takes the dead one's runs over
   at once), lets it work a random 50-400 ms (now and then: any point from its spawn, start-up
   included) and SIGKILLs it. After every kill the store is checked (dense ledgers, no duplicate
   completion, integrity_check); at the end a last runner finishes everything and every run, command
   and ledger is checked against what it must be.
2. Three runners with 1 s leases; one holding a long run mid-tick is SIGSTOPped until another has
   taken the run over, then woken while the other two are stopped: whatever it then writes is
   rejected by the fence, so nothing in the db changes, and the runs still end exactly right.
3. One kill point made deterministic: between the runtime's resume record and the save committing
   the resume. The record is staged in the worker's unit of work and commits with the save
   (shared_store/run_unit.py), so the re-applied command finds the wait answered and the ledger
   holds one resume record. More kill points of the unit: test_unit_of_work.py.

CHAOS_TRIALS (default 20, the CI short form; 200 the long form) sets test 1's trials; CHAOS_SEED
(default random) its choices and test 2's victims.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared_store.inbox import append_command
from tests.chaos.conftest import chaos_trials, log_events, store_violations, write_lock_free
from tests.runner.conftest import Gateway, RunnerProcess

IN_FLIGHT = 50
TERMINAL = ("completed", "failed", "cancelled")
# bundle: weight in the mix
MIX = {
    "bench-echo": 12,
    "bench-loop": 28,
    "chain-effects-200": 10,
    "bench-tick": 16,
    "bench-ask": 17,
    "demo-wait": 17,
}
PAUSABLE = ("bench-loop", "chain-effects-200", "bench-tick")


@dataclass
class Tracked:
    run_id: str
    bundle: str
    input: dict[str, Any]
    index: int
    done: bool = False
    answers: list[str] = field(default_factory=list)  # resume-with-payload command ids, in order
    emit: str | None = None  # the emit_event command id answering demo-wait's demo:approval
    pause_open: int | None = None  # the step its unanswered pause was sent in


@dataclass
class Sent:
    command_id: str
    run_id: str
    type: str
    payload: dict[str, Any]


class KillChaos:
    """Keeps IN_FLIGHT runs going and answers them with commands, as a client would."""

    def __init__(self, gateway: Gateway, rng: random.Random, replay: str) -> None:
        self.gw = gateway
        self.rng = rng
        self.replay = replay
        self.runs: dict[str, Tracked] = {}
        self.sent: dict[str, Sent] = {}
        self.steps = 0

    def expect(self, condition: object, message: str) -> None:
        if not condition:
            pytest.fail(f"{message}\n(replay: {self.replay})", pytrace=False)

    # --- the client side -----------------------------------------------------------------------
    def start_one(self) -> None:
        rng = self.rng
        bundle = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        index = len(self.runs)
        inputs: dict[str, dict[str, Any]] = {
            "bench-echo": {"message": f"echo-{index}-{rng.randrange(10**6)}"},
            "bench-loop": {"n": rng.randint(20, 200)},
            "chain-effects-200": {},
            "bench-tick": {"n": rng.randint(3, 10), "delay": rng.choice((0.01, 0.02, 0.05, 0.1))},
            "bench-ask": {},
            "demo-wait": {"x": rng.randint(1, 1000)},
        }
        run_id = self.gw.start(bundle, inputs[bundle])
        self.runs[run_id] = Tracked(run_id, bundle, inputs[bundle], index)

    def command(self, run: Tracked, type_: str, payload: dict[str, Any]) -> str:
        command_id = f"chaos-{len(self.sent):05d}-{type_}"
        append_command(self.gw.db, command_id=command_id, run_id=run.run_id, type=type_, payload=payload)
        self.sent[command_id] = Sent(command_id, run.run_id, type_, payload)
        return command_id

    def step(self, *, final: bool = False) -> None:
        """Answer what the runs wait for, pause and resume some, top the runs in flight up."""
        self.steps += 1
        active = [run for run in self.runs.values() if not run.done]
        rows = self.gw.db.query(
            f"SELECT run_id, status, paused, wait_reason FROM runs WHERE run_id IN "
            f"({', '.join('?' * len(active))})",
            [run.run_id for run in active],
        )
        for run_id, status, paused, wait_reason in rows:
            run = self.runs[run_id]
            if run.pause_open is not None:
                if final or status in TERMINAL or self.steps - run.pause_open >= self.rng.randint(1, 4):
                    self.command(run, "resume", {})
                    if self.rng.random() < 0.2:
                        self.command(run, "resume", {})  # a second resume of an unpaused run: a no-op
                    run.pause_open = None
                continue
            if status in TERMINAL:
                run.done = True
            elif status == "waiting" and wait_reason == "user" and not run.answers:
                if run.bundle == "bench-ask":
                    self.answer(run, f"go-{run.index}")
                    if self.rng.random() < 0.3:  # a second answer to the same, single wait
                        self.answer(run, f"again-{run.index}")
                elif run.bundle == "demo-wait":
                    self.answer(run, f"yes-{run.index}")
            elif run.bundle == "demo-wait" and wait_reason == "event" and run.emit is None and not paused:
                payload = {"name": "demo:approval", "payload": {"approved": True, "n": run.index}}
                run.emit = self.command(run, "emit_event", payload)
            elif (
                not final
                and run.bundle in PAUSABLE
                and status in ("running", "waiting")
                and self.rng.random() < 0.06
            ):
                self.command(run, "pause", {"reason": "chaos"})
                run.pause_open = self.steps
        if not final:
            while sum(1 for run in self.runs.values() if not run.done) < IN_FLIGHT:
                self.start_one()

    def answer(self, run: Tracked, response: str) -> None:
        run.answers.append(self.command(run, "resume", {"payload": {"response": response}}))

    def settled(self) -> bool:
        if any(not run.done or run.pause_open is not None for run in self.runs.values()):
            return False
        pending = self.gw.db.query_one("SELECT COUNT(*) FROM commands WHERE status = 'pending'")
        return pending == (0,)

    # --- the checks at the end -----------------------------------------------------------------
    def verify(self, logs: list[dict[str, Any]]) -> dict[str, int]:
        gw = self.gw
        expect = self.expect
        problems = store_violations(gw.db)
        expect(not problems, "store invariants broken:\n" + "\n".join(problems[:20]))

        commands = {
            row[0]: row[1:]
            for row in gw.db.query("SELECT command_id, run_id, type, status, error, seq FROM commands")
        }
        pending = [cid for cid, row in commands.items() if row[2] == "pending"]
        expect(not pending, f"commands left pending: {pending[:10]}")
        for cid, sent in self.sent.items():
            expect(cid in commands, f"command {cid} lost")
            run_id, type_, status = commands[cid][:3]
            expect((run_id, type_) == (sent.run_id, sent.type), f"command {cid} stored as {run_id} {type_}")
            expect(status in ("applied", "rejected"), f"command {cid} ended {status}")
        deliveries = {cid for cid, row in commands.items() if row[1] == "deliver_event"}
        emitted = {f"{run.emit}>{run.run_id}" for run in self.runs.values() if run.emit}
        expect(
            deliveries == emitted,
            f"deliveries {sorted(deliveries - emitted)[:5]} unexpected, {sorted(emitted - deliveries)[:5]} missing",
        )
        for cid in deliveries:
            expect(
                commands[cid][2] == "applied", f"delivery {cid} ended {commands[cid][2]}: {commands[cid][3]}"
            )
        # A command is resolved by one runner, once: one log line per command seq, saying what the db says.
        by_seq = {row[4]: (cid, row[2]) for cid, row in commands.items()}
        logged = Counter(e["seq"] for e in logs if e.get("event") == "command")
        expect(max(logged.values(), default=1) == 1, f"commands resolved twice: {logged.most_common(3)}")
        for event in logs:
            if event.get("event") == "command":
                cid, status = by_seq[event["seq"]]
                expect(event["status"] == status, f"{cid}: logged {event['status']}, stored {status}")
        for name in ("run_started", "run_finished"):
            counted = Counter(e["run_id"] for e in logs if e.get("event") == name)
            expect(max(counted.values(), default=1) == 1, f"{name} twice: {counted.most_common(3)}")

        replayed = 0
        for run in self.runs.values():
            replayed += self.verify_run(run, commands)
        return {"replayed_steps": replayed, "commands": len(self.sent), "deliveries": len(deliveries)}

    def verify_run(self, run: Tracked, commands: dict[str, tuple[Any, ...]]) -> int:
        """The run ended as its bundle must; each wait was resumed once; returns its replayed steps."""
        gw, expect = self.gw, self.expect
        state = gw.run(run.run_id)
        what = f"{run.bundle} run {run.run_id} ({run.input})"
        expect(
            state["status"] == "completed" and not state["output_failed"] and not state["paused"],
            f"{what} ended {state['status']} paused={state['paused']}: {state['error'] or state['output']}",
        )
        records = [record for _, record in gw.ledger(run.run_id)]
        output = state["output"] or {}
        effect_type = [(r.get("effect") or {}).get("type") for r in records]
        completed = Counter(
            t for r, t in zip(records, effect_type, strict=True) if r["status"] == "completed"
        )
        started = Counter(r.get("idempotency_key") for r in records if r["status"] == "started")
        resumes = [r["effect"]["payload"] for r, t in zip(records, effect_type, strict=True) if t == "resume"]
        by_key = Counter(p["wait_key"] for p in resumes)
        expect(max(by_key.values(), default=1) == 1, f"{what}: a wait resumed twice: {by_key}")
        expect(completed[None] == 1, f"{what}: {completed[None]} completion records")

        applied = [cid for cid in run.answers if commands[cid][2] == "applied"]
        answered = [self.sent[cid].payload["payload"] for cid in applied]
        user_resumes = [p["payload"] for p in resumes if p["wait_reason"] == "user"]
        if run.bundle in ("bench-ask", "demo-wait"):
            expect(len(applied) == 1, f"{what}: answers applied {applied} of {run.answers}")
            expect(user_resumes == answered, f"{what}: resumed with {user_resumes}, applied {answered}")
            rejected = [cid for cid in run.answers if cid not in applied]
            expect(
                all(commands[cid][2] == "rejected" for cid in rejected), f"{what}: {rejected} not rejected"
            )
            expect(
                output.get("response", output.get("answer")) == answered[0]["response"], f"{what}: {output}"
            )
        else:
            expect(not user_resumes, f"{what}: resumed {user_resumes}")

        if run.bundle == "bench-echo":
            expect(output.get("result") == run.input["message"], f"{what}: output {output}")
        elif run.bundle in ("bench-loop", "bench-tick"):
            expect(completed["emit_event"] == run.input["n"] + 1, f"{what}: {completed}")  # + terminal status
        elif run.bundle == "chain-effects-200":
            expect(completed["answer_user"] == 200, f"{what}: {completed}")
            expect(output == {"last": "step 199", "success": True}, f"{what}: output {output}")
        elif run.bundle == "demo-wait":
            expect(output.get("doubled") == 2 * run.input["x"], f"{what}: output {output}")
            event = output.get("event") or {}
            sent = self.sent[run.emit or ""]
            expect(event.get("payload") == sent.payload["payload"], f"{what}: event {event}")
            events = [p["payload"] for p in resumes if p["wait_key"] == "demo:approval"]
            expect(len(events) == 1 and events[0]["event_id"] == sent.command_id, f"{what}: events {events}")
        return sum(count - 1 for key, count in started.items() if key and count > 1)


def _wait_for_line(process: RunnerProcess, needle: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in process.log_path.read_text(errors="replace"):
        if process.proc.poll() is not None:
            pytest.fail(f"runner exited ({process.proc.returncode}): {process.log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"runner never logged {needle}")
        time.sleep(0.01)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_sigkill_at_random_points_loses_nothing_and_applies_nothing_twice(
    gateway: Gateway, chaos_seed: int
) -> None:
    trials = chaos_trials()
    rng = random.Random(chaos_seed)
    replay = f"CHAOS_SEED={chaos_seed} CHAOS_TRIALS={trials}"
    chaos = KillChaos(gateway, rng, replay)
    began = time.monotonic()
    chaos.step()
    during_startup = 0
    for trial in range(trials):
        runner = gateway.runner(f"k{trial:03d}", lease_s=0.5)
        if rng.random() < 0.1:  # anywhere from the spawn on: imports, bundle checks, registration
            during_startup += 1
            kill_at = time.monotonic() + rng.uniform(0.0, 1.5)
        else:
            _wait_for_line(runner, '"runner_started"')
            kill_at = time.monotonic() + rng.uniform(0.05, 0.4)
        _sleep_until(rng.uniform(time.monotonic(), kill_at))
        chaos.step()  # commands and new runs arrive while it works
        _sleep_until(kill_at)
        runner.kill()
        problems = store_violations(gateway.db)
        chaos.expect(not problems, f"after kill {trial + 1}:\n" + "\n".join(problems[:20]))
        chaos.step()

    final = gateway.runner("final", lease_s=0.5)
    deadline = time.monotonic() + 300
    while not chaos.settled():
        chaos.step(final=True)
        chaos.expect(time.monotonic() < deadline, "runs did not all finish after the last kill")
        chaos.expect(
            final.proc.poll() is None, f"the last runner exited: {final.log_path.read_text()[-3000:]}"
        )
        time.sleep(0.05)
    assert final.stop() == 0
    logs = [event for process in gateway.runners for event in log_events(process.log_path)]
    stats = chaos.verify(logs)
    types = Counter(f"{s.type}:{gateway.command(s.command_id)[0]}" for s in chaos.sent.values())
    records = gateway.db.query_one("SELECT COUNT(*) FROM ledger")
    print(
        f"chaos kill: {trials} trials, {trials} kills ({during_startup} from spawn), {len(chaos.runs)} runs, "
        f"{stats['commands']} commands {dict(sorted(types.items()))}, {stats['deliveries']} deliveries, "
        f"{records[0] if records else 0} ledger records, {stats['replayed_steps']} steps replayed after a kill, "
        f"{time.monotonic() - began:.1f}s ({replay})"
    )


# --- SIGSTOP: a runner that wakes after its lease was taken over ---------------------------------
def freeze(process: RunnerProcess) -> None:
    """SIGSTOP, and wait until every thread of the process is stopped (the signal is asynchronous)."""
    process.proc.send_signal(signal.SIGSTOP)
    tasks = Path(f"/proc/{process.proc.pid}/task")
    deadline = time.monotonic() + 10
    while not all(_task_state(task) in ("T", "t") for task in tasks.iterdir()):
        assert time.monotonic() < deadline, f"{process.log_path.stem} did not stop"
        time.sleep(0.001)


def _task_state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "T"  # a thread that ended


def thaw(process: RunnerProcess) -> None:
    process.proc.send_signal(signal.SIGCONT)


def _lease(gateway: Gateway, run_id: str) -> tuple[str | None, int, float, int]:
    """(owner, epoch, expires_at, ledger_len) of a run."""
    row = gateway.db.query_one(
        "SELECT lease_owner, lease_epoch, COALESCE(lease_expires_at, 0), ledger_len FROM runs WHERE run_id = ?",
        (run_id,),
    )
    assert row is not None
    return row[0], int(row[1]), float(row[2]), int(row[3])


_RUN_COLUMNS = (
    "run_id, lease_owner, lease_epoch, lease_expires_at, status, current_node, wait_reason, wait_key, "
    "paused, due_at, ledger_len, feed_seq, updated_at"
)


def _snapshot(gateway: Gateway) -> dict[str, dict[Any, Any]]:
    """Everything a runner writes for a run: its row (lease included), state, ledger, commands."""
    ledger = gateway.db.query(
        "SELECT run_id, COUNT(*), MAX(seq), SUM(LENGTH(record)) FROM ledger GROUP BY run_id"
    )
    return {
        "runs": {row[0]: row for row in gateway.db.query(f"SELECT {_RUN_COLUMNS} FROM runs")},
        "states": {row[0]: row for row in gateway.db.query("SELECT run_id, run_json FROM run_states")},
        "ledger": {row[0]: row for row in ledger},
        "commands": {row[1]: row for row in gateway.db.query("SELECT run_id, seq, status FROM commands")},
    }


def _lease_lost(process: RunnerProcess, run_id: str) -> list[dict[str, Any]]:
    events = log_events(process.log_path)
    return [e for e in events if e.get("event") == "lease_lost" and e.get("run_id") == run_id]


def _emit_index(record: dict[str, Any]) -> int | None:
    """Which of a bench-loop's emits a record belongs to (its event id ends with ':emit:<i>')."""
    effect = record.get("effect") or {}
    event_id = str((effect.get("payload") or {}).get("event_id") or "")
    head, _, tail = event_id.rpartition(":emit:")
    return int(tail) if head and tail.isdigit() else None


def _stop_a_runner_mid_tick(
    gateway: Gateway, runners: dict[str, RunnerProcess], run_ids: list[str], rng: random.Random
) -> tuple[str, str, int, int]:
    """SIGSTOP a runner while it ticks a run (it holds the lease, the ledger grows under it) and holds
    no write transaction (else every writer would wait on it: SQLite's lock knows no lease).
    Returns (runner id, run id, the stale epoch, ledger_len when stopped)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        candidate = rng.choice(run_ids)
        owner, epoch, _, length = _lease(gateway, candidate)
        time.sleep(0.03)
        now_owner, now_epoch, _, now_length = _lease(gateway, candidate)
        if owner not in runners or (now_owner, now_epoch) != (owner, epoch) or now_length <= length:
            continue
        freeze(runners[owner])
        now_owner, now_epoch, _, stopped_at_len = _lease(gateway, candidate)
        if (now_owner, now_epoch) == (owner, epoch) and write_lock_free(gateway.db_path):
            return owner, candidate, epoch, stopped_at_len
        thaw(runners[owner])
    pytest.fail("no runner seen ticking a run")


def _freeze_outside_a_write(gateway: Gateway, processes: list[RunnerProcess], rng: random.Random) -> None:
    while True:
        for process in processes:
            freeze(process)
        if write_lock_free(gateway.db_path):
            return
        for process in processes:
            thaw(process)
        time.sleep(rng.uniform(0.001, 0.01))


def test_a_sigstopped_runner_woken_after_its_lease_expired_is_fenced_out(
    gateway: Gateway, chaos_seed: int
) -> None:
    rng = random.Random(chaos_seed)
    n = 1500
    run_ids = [gateway.start("bench-loop", {"n": n}) for _ in range(4)]
    runners = {rid: gateway.runner(rid, lease_s=1.0) for rid in ("s1", "s2", "s3")}
    # (run id, its ledger_len when the stale runner woke, lease_lost lines logged, of them epoch None)
    woken: list[tuple[str, int, int, int]] = []
    try:
        for _ in range(3):
            victim_id, target, stale_epoch, stopped_at_len = _stop_a_runner_mid_tick(
                gateway, runners, run_ids, rng
            )
            victim = runners[victim_id]
            others = {k: p for k, p in runners.items() if k != victim_id}

            def taken_over(
                target: str = target,
                stale: int = stale_epoch,
                length: int = stopped_at_len,
                holders: tuple[str, ...] = tuple(others),
            ) -> bool:
                owner, epoch, _, ledger_len = _lease(gateway, target)
                return owner in holders and epoch > stale and ledger_len > length + 10

            # Another runner takes the run over once the lease expired, and writes to it.
            gateway.wait(taken_over, "another runner to take the stopped runner's run over", timeout=60)

            # Freeze the world (outside any write transaction), then wake only the stale runner: from
            # now on, a change to a run the others hold could only be the stale runner's.
            _freeze_outside_a_write(gateway, list(others.values()), rng)
            before = _snapshot(gateway)
            lost_before = len(_lease_lost(victim, target))
            _, _, expires_at, woke_at_len = _lease(gateway, target)
            thaw(victim)
            # Its in-flight tick goes on, and its next write is rejected (logged lease_lost). The
            # window closes before the others' leases expire, so no run of theirs may change hands.
            window_end = expires_at - 0.15
            while len(_lease_lost(victim, target)) == lost_before and time.time() < window_end:
                time.sleep(0.005)
            time.sleep(max(0.0, min(0.1, window_end - time.time())))  # whatever else it was about to write
            after = _snapshot(gateway)
            for process in others.values():
                thaw(process)
            lost = _lease_lost(victim, target)[lost_before:]
            assert lost, f"the woken runner {victim_id} logged no lease_lost for {target} in the window"

            held = [
                run_id
                for run_id in before["runs"]
                if _owner(before, run_id)[0] in others and _owner(after, run_id) == _owner(before, run_id)
            ]
            assert target in held, (
                f"{target} changed hands while the world was frozen: {before['runs'][target]} -> "
                f"{after['runs'][target]} (now {time.time()}); {victim_id}: {log_events(victim.log_path)[-8:]}"
            )
            changed = {
                table: [key for key, row in rows.items() if row[0] in held and after[table].get(key) != row]
                for table, rows in before.items()
            }
            assert not any(changed.values()), (
                f"the woken runner {victim_id} changed runs it no longer held: {changed}\n"
                f"its log since it woke: {log_events(victim.log_path)[-15:]}"
            )
            woken.append((target, woke_at_len, len(lost), sum(1 for e in lost if e.get("epoch") is None)))

        gateway.wait(
            lambda: (
                gateway.db.query_one("SELECT COUNT(*) FROM runs WHERE status = 'completed'")
                == (len(run_ids),)
            ),
            "every run to complete",
            timeout=240,
        )
    finally:
        for process in runners.values():
            if process.proc.poll() is None:
                thaw(process)
    for process in runners.values():
        assert process.stop() == 0
    problems = store_violations(gateway.db)
    assert not problems, "\n".join(problems)
    for run_id in run_ids:
        records = [record for _, record in gateway.ledger(run_id)]
        done = Counter(_emit_index(r) for r in records if r["status"] == "completed" and _emit_index(r))
        assert sorted(done) == list(range(1, n + 1)) and set(done.values()) == {1}, f"{run_id}: emits"
    # After the stale runner woke, its run only moved forward: no record of a step before the
    # furthest one already written (a stale append or a stale state save would start over behind it).
    for run_id, woke_at_len, *_ in woken:
        records = [record for _, record in gateway.ledger(run_id)]
        reached = max(i for r in records[:woke_at_len] if (i := _emit_index(r)) is not None)
        later = [i for r in records[woke_at_len:] if (i := _emit_index(r)) is not None]
        assert all(i >= reached for i in later) and later == sorted(later), (
            f"{run_id} went back after the wake"
        )
    print(f"chaos stop: {len(woken)} wakes (run, ledger_len at wake, lease_lost lines, epoch None): {woken}")


def _owner(snapshot: dict[str, dict[Any, Any]], run_id: str) -> tuple[Any, Any]:
    """(lease_owner, lease_epoch) of a run in a snapshot."""
    row = snapshot["runs"][run_id]
    return row[1], row[2]


# --- a kill inside the resume window, made deterministic ------------------------------------------
class _Killed(BaseException):
    """Stands for SIGKILL at one instruction: nothing after it runs, nothing uncommitted survives."""


def test_a_kill_between_the_resume_record_and_its_save_leaves_one_resume_record(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from runner_service.worker import Worker, WorkerSettings
    from shared_store import LeaseHolder
    from shared_store.run_store import SqliteRunStore

    def worker(owner: str) -> tuple[LeaseHolder, Worker]:
        fence = LeaseHolder(gateway.db, owner, lease_s=30.0)
        settings = WorkerSettings(artifacts_dir=gateway.tmp_path / "artifacts")
        return fence, Worker(gateway.db, fence, settings, stopping=threading.Event())

    run_id = gateway.start("bench-ask")
    fence, first = worker("first")
    assert fence.claim(1)
    first.process(run_id)
    assert gateway.run(run_id)["wait_reason"] == "user"
    append_command(
        gateway.db, command_id="answer", run_id=run_id, type="resume", payload={"payload": {"response": "go"}}
    )

    write = SqliteRunStore._write

    def dies_before_the_resume_commits(self: SqliteRunStore, run: Any, sql: str, strict: bool = True) -> bool:
        if run.status.value != "waiting":
            raise _Killed
        return write(self, run, sql, strict=strict)

    fence, doomed = worker("doomed")
    assert fence.claim(1)
    monkeypatch.setattr(SqliteRunStore, "_write", dies_before_the_resume_commits)
    with pytest.raises(_Killed):
        doomed.process(run_id)  # (its lease is released on the way out; a real kill lets it expire)
    monkeypatch.setattr(SqliteRunStore, "_write", write)
    assert gateway.command("answer")[0] == "pending", "the resume did not commit"

    gateway.runner("after", lease_s=1.0)
    assert gateway.wait_status(run_id, "completed")["output"]["response"] == "go"
    assert gateway.command("answer")[0] == "applied"
    resumes = [r for _, r in gateway.ledger(run_id) if (r.get("effect") or {}).get("type") == "resume"]
    assert len(resumes) == 1, f"the wait was answered {len(resumes)} times in the ledger"
