"""Hosts that share only PostgreSQL share artifacts: what a runner stores under its own data dir is
downloaded through an API host with a different data dir, and bytes another host stored are served
too — read from the database, never from a disk (the API host's artifacts path is a plain file, so no
blob could be read through it, and no file named by a blob id exists anywhere afterwards).

Real parts: a PostgreSQL server of the test's own, the API under Hypercorn on 127.0.0.1, a runner
process (`abstractgateway runner --db-url`), and a third process storing bytes as another host would.
Runs on PostgreSQL whatever ABSTRACTGATEWAY_TEST_BACKEND says: separate data dirs are its subject."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared_store.blob_store import CHUNK
from shared_store.bundles import import_flows_dir
from shared_store.postgres.database import PgDatabase
from tests.pg.fixtures import pg_cluster, pg_db  # noqa: F401 - fixtures used by name

from .conftest import TERMINAL, TOKEN, make_settings, running_server, stop_process

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api_host(request: pytest.FixtureRequest, tmp_path: Path, flows: Path) -> Iterator[tuple]:
    """The API host: its own data dir, whose artifacts path is a plain file (nothing can be read
    from under it)."""
    url = request.getfixturevalue("pg_db").url
    host = tmp_path / "api-host"
    host.mkdir()
    artifacts = host / "artifacts"
    artifacts.write_text("not a directory: this host keeps no artifact bytes\n")
    db = PgDatabase(url, data_dir=host)
    assert import_flows_dir(db, flows) == []
    try:
        with (
            running_server(db, make_settings(host), artifacts) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            ) as client,
        ):
            yield db, client, url
    finally:
        db.close()


def _runner_host(url: str, data_dir: Path, flows: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir()
    args = [sys.executable, "-m", "abstractgateway", "runner", "--db-url", url, "--data-dir", str(data_dir)]
    args += ["--flows-dir", str(flows), "--poll-s", "0.02"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "ABSTRACTGATEWAY_DATA_DIR": str(data_dir)}
    with (data_dir / "runner.log").open("ab") as log:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)


def _store_on_another_host(
    url: str, data_dir: Path, run_id: str, items: list[tuple[str, bytes]]
) -> list[str]:
    """A process with its own data dir stores artifacts of the run (as an API host receiving an
    upload would); returns their ids."""
    data_dir.mkdir()
    script = (
        "import sys\n"
        "from shared_store.backend import connect_store\n"
        "from shared_store.artifact_store import SqliteArtifactStore\n"
        "db = connect_store(sys.argv[1], data_dir=sys.argv[2])\n"
        "store = SqliteArtifactStore(db, sys.argv[2] + '/artifacts')\n"
        "data = sys.stdin.buffer.read()\n"
        "for kind, size in zip(sys.argv[4::2], sys.argv[5::2]):\n"
        "    content, data = data[: int(size)], data[int(size):]\n"
        "    print(store.store(content, content_type=kind, run_id=sys.argv[3]).artifact_id)\n"
        "db.close()\n"
    )
    sizes = [part for kind, content in items for part in (kind, str(len(content)))]
    done = subprocess.run(
        [sys.executable, "-c", script, url, str(data_dir), run_id, *sizes],
        input=b"".join(content for _, content in items),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().split()


def _wait_done(client: httpx.Client, run_id: str) -> dict:
    view: dict = {}
    for _ in range(1_500):
        view = client.get(f"/api/gateway/runs/{run_id}").json()
        if view["status"] in TERMINAL:
            return view
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} never finished: {view}")


def test_a_runners_artifact_is_served_by_an_api_host_with_another_data_dir(
    api_host: tuple, tmp_path: Path, flows: Path
) -> None:
    db, client, url = api_host
    runner = _runner_host(url, tmp_path / "runner-host", flows)
    try:
        started = client.post(
            "/api/gateway/runs/start", json={"bundle_id": "bench-echo", "input_data": {"message": "hi"}}
        )
        assert started.status_code == 200, started.text
        run_id = started.json()["run_id"]
        assert _wait_done(client, run_id)["status"] == "completed"
    finally:
        stop_process(runner)

    # The runner stored the run's workflow snapshot: its bytes are a row, and the API serves them.
    items = client.get(f"/api/gateway/runs/{run_id}/artifacts").json()["items"]
    assert len(items) == 1, items
    snapshot = items[0]
    content = client.get(f"/api/gateway/runs/{run_id}/artifacts/{snapshot['artifact_id']}/content")
    assert content.status_code == 200, content.text
    assert content.headers["content-type"].startswith("application/json")
    assert content.headers["x-content-type-options"] == "nosniff"
    row = db.query_one(
        "SELECT b.content FROM artifact_blobs b JOIN artifacts a ON a.blob_id = b.blob_id "
        "WHERE a.artifact_id = ?",
        (snapshot["artifact_id"],),
    )
    assert row is not None and content.content == bytes(row[0])
    assert content.json()["flow_id"] and content.json()["kind"] == "visualflow_json"
    # history_bundle: the exporter the API host starts opens its artifact store on the same database.
    history = client.get(f"/api/gateway/runs/{run_id}/history_bundle")
    assert history.status_code == 200, history.text
    assert history.json()["workflow_snapshot"]["artifact_id"] == snapshot["artifact_id"]
    assert [a["artifact_id"] for a in history.json()["artifacts"]] == [snapshot["artifact_id"]]

    # Bytes a third host stored: a large video streams in pieces; active content is an attachment.
    video = os.urandom(2 * CHUNK + 4321)
    page = b"<html><script>alert(1)</script></html>"
    video_id, page_id = _store_on_another_host(
        url, tmp_path / "upload-host", run_id, [("video/mp4", video), ("text/html", page)]
    )
    streamed = client.get(f"/api/gateway/runs/{run_id}/artifacts/{video_id}/content")
    assert streamed.status_code == 200 and streamed.content == video
    assert (
        streamed.headers["content-length"] == str(len(video))
        and streamed.headers["content-type"] == "video/mp4"
    )
    html = client.get(f"/api/gateway/runs/{run_id}/artifacts/{page_id}/content")
    assert html.status_code == 200 and html.content == page
    assert html.headers["content-disposition"] == f'attachment; filename="{page_id}"'
    assert (
        html.headers["content-security-policy"] == "sandbox"
        and html.headers["x-content-type-options"] == "nosniff"
    )
    assert client.get(f"/api/gateway/runs/{run_id}/artifacts/{video_id}x/content").status_code == 404

    # No host's disk holds a blob: no file anywhere is named by a blob id.
    blob_ids = {str(r[0]) for r in db.query("SELECT blob_id FROM artifact_blobs")}
    assert len(blob_ids) == 3 and hashlib.sha256(video).hexdigest() in blob_ids
    on_disk = [p for p in tmp_path.rglob("*") if p.name in blob_ids]
    assert on_disk == [], on_disk
    assert not (tmp_path / "runner-host" / "artifacts").exists()
    assert not (tmp_path / "upload-host" / "artifacts").exists()
