"""`migrate --from=file`: a data dir written by abstractruntime's own file stores, imported into the db.

The fixture is built the way the original gateway composed its file backend (`build_file_stores`):
offloading run/ledger stores over JsonFileRunStore / JsonlLedgerStore, a FileArtifactStore, the
JSONL command inbox and its cursor, all in one folder, with real runs of the sample bundles.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from abstractruntime import (
    FileArtifactStore,
    JsonFileCommandCursorStore,
    JsonFileRunStore,
    JsonlCommandStore,
    JsonlLedgerStore,
    ObservableLedgerStore,
    OffloadingLedgerStore,
    OffloadingRunStore,
    Runtime,
)
from abstractruntime.core.models import RunStatus
from abstractruntime.storage.commands import CommandRecord

from shared_store import Database
from shared_store.artifact_store import SqliteArtifactStore
from shared_store.codec import decode
from shared_store.file_import import ImportSummary, import_file_store
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore
from tests.conftest import REPO, load_spec

WAV = b"RIFF" + bytes(range(256)) * 64  # a media artifact, as a TTS node would leave one


@dataclass(frozen=True)
class FileData:
    path: Path
    echo: str  # completed
    big: str  # completed, large values offloaded to artifacts
    ask: str  # waiting for the user
    chain: str  # completed, 402 ledger records


def _file_runtime(base: Path) -> Runtime:
    artifacts = FileArtifactStore(base)
    runs = OffloadingRunStore(JsonFileRunStore(base), artifact_store=artifacts, max_inline_bytes=64 * 1024)
    ledger = OffloadingLedgerStore(
        ObservableLedgerStore(JsonlLedgerStore(base)), artifact_store=artifacts, max_inline_bytes=64 * 1024
    )
    return Runtime(run_store=runs, ledger_store=ledger, artifact_store=artifacts)


@pytest.fixture(scope="module")
def file_data(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> FileData:
    base = tmp_path_factory.mktemp("file-gateway")
    runtime = _file_runtime(base)
    echo_spec = load_spec(flows, "bench-echo@1.0.0")
    echo = runtime.start(workflow=echo_spec, vars={"message": "hello"})
    assert runtime.tick(workflow=echo_spec, run_id=echo).status == RunStatus.COMPLETED
    big = runtime.start(workflow=echo_spec, vars={"message": "x" * 100_000})
    assert runtime.tick(workflow=echo_spec, run_id=big).status == RunStatus.COMPLETED
    runtime.artifact_store.store(WAV, content_type="audio/wav", run_id=echo, tags={"kind": "tts"})
    ask_spec = load_spec(flows, "bench-ask@1.0.0")
    ask = runtime.start(workflow=ask_spec, vars={})
    assert runtime.tick(workflow=ask_spec, run_id=ask).status == RunStatus.WAITING
    chain_spec = load_spec(flows, "chain-effects-200@0.1.0")
    chain = runtime.start(workflow=chain_spec, vars={})
    assert runtime.tick(workflow=chain_spec, run_id=chain, max_steps=1000).status == RunStatus.COMPLETED
    commands = JsonlCommandStore(base)
    commands.append(CommandRecord(command_id="c-pause", run_id=echo, type="pause", payload={}, ts=""))
    resume = {"payload": {"response": "yes"}}
    commands.append(CommandRecord(command_id="c-resume", run_id=ask, type="resume", payload=resume, ts=""))
    JsonFileCommandCursorStore(base / "commands_cursor.json").save(1)  # the file runner got past c-pause
    return FileData(base, echo, big, ask, chain)


def _import(db, source: Path, tmp_path: Path) -> ImportSummary:
    return import_file_store(db, source, artifacts_dir=tmp_path / "artifacts")


def _counts(db) -> tuple[int, ...]:
    return tuple(
        db.query_one(f"SELECT count(*) FROM {table}")[0]
        for table in ("runs", "ledger", "commands", "artifacts")
    )


def test_counts_and_contents_match_the_files(db, tmp_path: Path, file_data: FileData) -> None:
    summary = _import(db, file_data.path, tmp_path)
    assert summary.ok and not summary.skipped and not summary.kept, summary.lines()
    assert (summary.runs_found, summary.runs_imported, summary.commands_imported) == (4, 4, 2)
    ledger = JsonlLedgerStore(file_data.path)
    for run_id in (file_data.echo, file_data.big, file_data.ask, file_data.chain):
        records = ledger.list(run_id)
        rows = db.query("SELECT seq, record FROM ledger WHERE run_id = ? ORDER BY seq", (run_id,))
        assert [seq for seq, _ in rows] == list(range(1, len(records) + 1))
        assert [decode(record) for _, record in rows] == records, "records are kept as the file has them"
        assert SqliteRunStore(db).load(run_id) == JsonFileRunStore(file_data.path).load(run_id)
    assert len(ledger.list(file_data.chain)) == 402
    files = FileArtifactStore(file_data.path)
    ours = SqliteArtifactStore(db, tmp_path / "artifacts")
    metas = files.list_all(limit=0)
    assert len(metas) == summary.artifacts_imported >= 3, "the WAV and the offloaded values"
    for meta in metas:
        assert ours.load(meta.artifact_id).content == files.load(meta.artifact_id).content
        assert ours.get_metadata(meta.artifact_id).to_dict() == meta.to_dict()
    assert any(ours.load(m.artifact_id).content == WAV for m in ours.list_by_run(file_data.echo))
    assert _counts(db) == (
        4,
        sum(len(ledger.list(r)) for r in (file_data.echo, file_data.big, file_data.ask, file_data.chain)),
        2,
        len(metas),
    )
    # Processed commands land applied, the rest pending; runs are unleased, due when there is work.
    statuses = dict(db.query("SELECT command_id, status FROM commands"))
    assert statuses == {"c-pause": "applied", "c-resume": "pending"}
    rows = {r[0]: r[1:] for r in db.query("SELECT run_id, status, lease_owner, due_at FROM runs")}
    assert rows[file_data.echo][:3] == ("completed", None, None)
    assert rows[file_data.ask][:2] == ("waiting", None) and rows[file_data.ask][2] is not None


def test_re_running_imports_nothing_new(db, tmp_path: Path, file_data: FileData) -> None:
    _import(db, file_data.path, tmp_path)
    before = _counts(db), db.query_one("SELECT max(feed_seq) FROM runs")
    again = _import(db, file_data.path, tmp_path)
    assert again.ok and (again.runs_imported, again.runs_updated, again.runs_unchanged) == (0, 0, 4)
    assert (again.ledger_records, again.commands_imported, again.artifacts_imported) == (0, 0, 0)
    assert (_counts(db), db.query_one("SELECT max(feed_seq) FROM runs")) == before
    assert "verify: counts match" in "\n".join(again.lines())


def test_a_run_the_file_gateway_advanced_since_takes_only_the_new_records(
    db, tmp_path: Path, file_data: FileData, flows: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(file_data.path, source)
    _import(db, source, tmp_path)
    before = db.query_one("SELECT ledger_len FROM runs WHERE run_id = ?", (file_data.ask,))[0]
    spec = load_spec(flows, "bench-ask@1.0.0")
    runtime = _file_runtime(source)
    wait_key = runtime.run_store.load(file_data.ask).waiting.wait_key
    runtime.resume(workflow=spec, run_id=file_data.ask, wait_key=wait_key, payload={"response": "yes"})
    summary = _import(db, source, tmp_path)
    total = len(JsonlLedgerStore(source).list(file_data.ask))
    assert summary.ok and (summary.runs_updated, summary.runs_unchanged) == (1, 3)
    assert summary.ledger_records == total - before > 0
    assert db.query_one("SELECT status, ledger_len FROM runs WHERE run_id = ?", (file_data.ask,)) == (
        "completed",
        total,
    )


def test_a_run_changed_in_the_db_since_is_kept(db, tmp_path: Path, file_data: FileData, flows: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(file_data.path, source)
    _import(db, source, tmp_path)
    spec = load_spec(flows, "bench-ask@1.0.0")
    ours = Runtime(run_store=SqliteRunStore(db), ledger_store=SqliteLedgerStore(db))
    wait_key = ours.run_store.load(file_data.ask).waiting.wait_key
    ours.resume(workflow=spec, run_id=file_data.ask, wait_key=wait_key, payload={"response": "no"})
    ledger_len = db.query_one("SELECT ledger_len FROM runs WHERE run_id = ?", (file_data.ask,))
    summary = _import(db, source, tmp_path)
    assert summary.ok and summary.kept == [file_data.ask] and summary.ledger_records == 0
    assert db.query_one("SELECT ledger_len FROM runs WHERE run_id = ?", (file_data.ask,)) == ledger_len


def test_corrupt_files_are_reported_and_skipped(db, tmp_path: Path, file_data: FileData) -> None:
    source = tmp_path / "source"
    shutil.copytree(file_data.path, source)
    (source / f"run_{file_data.echo}.json").write_text('{"run_id": "trunc')  # a torn run document
    chain_ledger = source / f"ledger_{file_data.chain}.jsonl"
    lines = chain_ledger.read_bytes().split(b"\n")
    lines[10] = lines[10][: len(lines[10]) // 2]  # a torn record in the middle
    chain_ledger.write_bytes(b"\n".join(lines))
    with (source / "commands.jsonl").open("a") as fh:
        fh.write('{"command_id": "c-torn", "run_id"\n')
    summary = _import(db, source, tmp_path)
    text = "\n".join(summary.lines())
    assert summary.ok, text
    assert f"run_{file_data.echo}.json: " in text
    assert f"ledger_{file_data.chain}.jsonl line 11: not a JSON record" in text
    assert f"ledger_{file_data.echo}.jsonl: no readable run_{file_data.echo}.json" in text
    assert "commands.jsonl line 3: not a command record" in text
    assert len(summary.skipped) == 4
    # The rest is imported: 3 runs, the chain's other 401 records, both good commands.
    assert summary.runs_imported == 3 and summary.commands_imported == 2
    assert db.query_one("SELECT count(*) FROM runs WHERE run_id = ?", (file_data.echo,)) == (0,)
    assert db.query_one("SELECT ledger_len FROM runs WHERE run_id = ?", (file_data.chain,)) == (401,)
    again = _import(db, source, tmp_path)
    assert again.ok and again.runs_imported == again.ledger_records == 0 and len(again.skipped) == 4


def test_a_damaged_blob_is_skipped(db, tmp_path: Path, file_data: FileData) -> None:
    source = tmp_path / "source"
    shutil.copytree(file_data.path, source)
    wav = next(m for m in FileArtifactStore(source).list_all(limit=0) if m.content_type == "audio/wav")
    (source / "artifacts" / "blobs" / f"{wav.blob_id}.bin").write_bytes(b"RIFF-damaged")
    summary = _import(db, source, tmp_path)
    assert summary.ok and summary.skipped == [
        f"artifacts/refs/{wav.artifact_id}.meta: ValueError: blob {wav.blob_id}.bin does not hash to its id "
        "(damaged)"
    ]
    assert db.query_one("SELECT count(*) FROM artifacts WHERE artifact_id = ?", (wav.artifact_id,)) == (0,)


def test_the_imported_waiting_run_resumes_here(db, tmp_path: Path, file_data: FileData, flows: Path) -> None:
    _import(db, file_data.path, tmp_path)
    spec = load_spec(flows, "bench-ask@1.0.0")
    runtime = Runtime(
        run_store=SqliteRunStore(db),
        ledger_store=SqliteLedgerStore(db),
        artifact_store=SqliteArtifactStore(db, tmp_path / "artifacts"),
    )
    before = db.query_one("SELECT ledger_len FROM runs WHERE run_id = ?", (file_data.ask,))[0]
    waiting = runtime.run_store.load(file_data.ask).waiting
    state = runtime.resume(
        workflow=spec, run_id=file_data.ask, wait_key=waiting.wait_key, payload={"response": "yes"}
    )
    assert state.status == RunStatus.COMPLETED
    seqs = [r[0] for r in db.query("SELECT seq FROM ledger WHERE run_id = ? ORDER BY seq", (file_data.ask,))]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > before


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abstractgateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


def test_cli_migrate_from_file(tmp_path: Path, file_data: FileData) -> None:
    target = tmp_path / "gateway"
    args = (
        "migrate",
        "--from=file",
        "--to=sqlite",
        "--data-dir",
        str(file_data.path),
        "--to-data-dir",
        str(target),
    )
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert "runs: 4 found, 4 imported" in first.stdout and "verify: counts match" in first.stdout
    assert (target / "gateway.sqlite3").exists() and any((target / "artifacts").rglob("*"))
    again = _cli(*args)
    assert again.returncode == 0 and "runs: 4 found, 0 imported, 0 updated, 4 unchanged" in again.stdout
    assert "ledger records: 0 imported" in again.stdout
    # A record lost from the db (a damaged copy): verification says so and the exit code is 1.
    db = Database(target / "gateway.sqlite3")
    db.execute_write("DELETE FROM ledger WHERE run_id = ? AND seq = 5", (file_data.chain,))
    db.close()
    lost = _cli(*args)
    assert lost.returncode == 1 and "verify: MISMATCH" in lost.stdout
    assert f"run {file_data.chain}: 401 ledger records in the db, 402 in the file" in lost.stdout
    same = _cli(
        "migrate", "--from=file", "--data-dir", str(file_data.path), "--to-data-dir", str(file_data.path)
    )
    assert same.returncode == 2 and "must differ" in same.stderr
    unnamed = _cli("migrate", "--from=file", "--to-data-dir", str(target))
    assert unnamed.returncode == 2 and "needs --data-dir" in unnamed.stderr
