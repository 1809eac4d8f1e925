"""WAL size under a write burst: N starts with a large input while a slow reader holds snapshots.

Reports the WAL file's peak size during the burst and its size once the burst is over and the
background checkpointer has run (`python -m bench.bench_wal [--quick]`)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from bench.options import bench_parser
from shared_store import Database, migrate
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.starts import enqueue_run

MIB = 1024 * 1024


def wal_size(db_path: Path) -> int:
    wal = db_path.with_name(db_path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def main() -> None:
    parser = bench_parser(__doc__ or "", quick_help="50 starts instead of 200")
    parser.add_argument("--input-kib", type=int, default=1024, help="input_data size per start (KiB)")
    args = parser.parse_args()
    starts = 50 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "gateway.sqlite3"
        db = Database(db_path)
        migrate(db)
        import_flows_dir(db, args.flows_dir)
        resolved = resolve_workflow(db, bundle_id="bench-echo")
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], wal_size(db_path))
                time.sleep(0.005)

        def reader() -> None:
            # A slow reader (a huge list or export) holds its snapshot 0.5 s at a time: the
            # checkpointer cannot pass it, so the WAL grows while it reads.
            reads = Database(db_path, checkpoint_every_s=None)
            conn = reads.connection()
            while not done.is_set():
                conn.execute("BEGIN")
                conn.execute("SELECT count(*) FROM runs").fetchall()
                done.wait(0.5)
                conn.execute("COMMIT")
            reads.close()

        threads = [threading.Thread(target=sample), threading.Thread(target=reader)]
        for thread in threads:
            thread.start()
        payload = {"blob": "x" * (args.input_kib * 1024)}
        started = time.monotonic()
        for _ in range(starts):
            enqueue_run(db, resolved=resolved, input_data=payload)
        burst_s = time.monotonic() - started
        done.set()
        for thread in threads:
            thread.join()
        time.sleep(2.0)  # a few checkpointer rounds (every 0.5 s)
        for _ in range(3):  # ordinary small writes go on: the first after a full checkpoint restarts the WAL
            enqueue_run(db, resolved=resolved, input_data={})
            time.sleep(0.6)
        after = wal_size(db_path)
        db_size = db_path.stat().st_size
        db.close()
    print(
        f"{starts} starts x {args.input_kib} KiB in {burst_s:.1f} s: WAL peak {peak[0] / MIB:.1f} MiB, "
        f"WAL after {after / MIB:.1f} MiB, db {db_size / MIB:.1f} MiB"
    )


if __name__ == "__main__":
    main()
