"""examples/flows: the sources build into bundles abstractruntime opens and compiles; the repo stands alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from abstractgateway.sample_flows import SOURCES_DIR, build_samples, is_current
from tests.conftest import REPO

# The bundles the suite and the benchmarks start by id@version: renaming one breaks their callers.
EXPECTED = {
    "bench-ask@1.0.0", "bench-echo@1.0.0", "bench-loop@1.0.0", "bench-tick@1.0.0",
    "chain-200@0.1.0", "chain-effects-200@0.1.0", "demo-event@0.1.0", "demo-fail@0.1.0",
    "demo-llm@0.1.0", "demo-subflow@0.1.0", "demo-wait@0.1.0",
}  # fmt: skip


def test_every_source_builds_into_a_bundle_that_compiles(tmp_path: Path) -> None:
    from abstractruntime.visualflow_compiler import compile_visualflow
    from abstractruntime.workflow_bundle import open_workflow_bundle

    out = tmp_path / "built"
    written = build_samples(SOURCES_DIR, out)
    assert {path.stem for path in written} == EXPECTED
    for path in written:
        opened = open_workflow_bundle(path)
        manifest = opened.manifest
        assert path.stem == f"{manifest.bundle_id}@{manifest.bundle_version}"
        for flow_id, member in manifest.flows.items():
            source = SOURCES_DIR / manifest.bundle_id / f"{flow_id}.json"
            assert opened.read_json(member) == json.loads(source.read_text())
        compile_visualflow(opened.read_json(manifest.flows[manifest.default_entrypoint]))
    assert "subflow" in (SOURCES_DIR / "demo-subflow" / "main.json").read_text()


def test_the_stamp_tracks_the_sources(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(SOURCES_DIR / "bench-echo", src / "bench-echo")
    shutil.copytree(SOURCES_DIR / "bench-ask", src / "bench-ask")
    out = tmp_path / "out"
    assert not is_current(src, out)
    build_samples(src, out)
    assert is_current(src, out)
    echo = src / "bench-echo" / "echo.json"
    echo.write_text(echo.read_text().replace("echoes message", "echoes the message"))
    assert not is_current(src, out), "an edited source makes the built folder stale"
    shutil.rmtree(src / "bench-ask")
    build_samples(src, out)
    assert sorted(p.name for p in out.glob("*.flow")) == ["bench-echo@1.0.0.flow"], "removed source pruned"


def test_the_cli_builds_then_says_up_to_date(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "abstractgateway", "flows", "build", "--out", str(tmp_path)]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    assert f"built {len(EXPECTED)} bundles" in first.stdout
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    assert "up to date" in again.stdout


def test_nothing_in_the_repository_reaches_outside_it() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    outside = "../" + "shared"  # split, so this file does not match itself
    offenders = [
        name
        for name in files.stdout.splitlines()
        if (REPO / name).is_file() and outside in (REPO / name).read_text(errors="replace")
    ]
    assert offenders == []
