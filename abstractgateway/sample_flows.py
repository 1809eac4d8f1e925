"""The project's own sample workflows: sources in examples/flows, built into `.flow` bundles.

Each folder of `examples/flows/` is one bundle: `bundle.json` (id, version, entrypoints) beside the
VisualFlow JSON of its flows (`<flow_id>.json`; a subflow is found by its id in the same folder).
`build_samples` packs them with abstractruntime's own packer into `<bundle_id>@<version>.flow` files.

The built files are not committed: the packer stamps `created_at` into every manifest, so a rebuild
would churn binary files in git for no change. Instead a `.sources` stamp (the sources' digest) says
whether the built folder is current, and callers (`abstractgateway flows build`, the test fixture,
the benchmarks, `make run`) rebuild only when it is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]  # the source tree (examples/ is not installed)
SOURCES_DIR = REPO / "examples" / "flows"
BUILT_DIR = REPO / "build" / "flows"
STAMP = ".sources"


def sources_digest(src: Path) -> str:
    """sha256 over every source file's relative path and bytes, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*.json") if p.is_file()):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_current(src: Path = SOURCES_DIR, out: Path = BUILT_DIR) -> bool:
    stamp = out / STAMP
    return stamp.is_file() and stamp.read_text().strip() == sources_digest(src)


def build_samples(src: Path = SOURCES_DIR, out: Path = BUILT_DIR) -> list[Path]:
    """Pack every bundle folder of `src` into `out`; returns the `.flow` files written."""
    from abstractruntime.workflow_bundle import pack_workflow_bundle

    folders = sorted(p for p in src.iterdir() if (p / "bundle.json").is_file())
    if not folders:
        raise FileNotFoundError(f"no bundle sources (folders with bundle.json) in {src}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for folder in folders:
        spec = json.loads((folder / "bundle.json").read_text())
        entrypoints = list(spec["entrypoints"])
        name = f"{spec['bundle_id']}@{spec['bundle_version']}.flow"
        # Pack beside the target, then rename: a concurrent reader never sees a half-written zip.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        os.close(fd)
        try:
            pack_workflow_bundle(
                root_flow_json=folder / f"{entrypoints[0]}.json",
                out_path=tmp,
                bundle_id=spec["bundle_id"],
                bundle_version=spec["bundle_version"],
                flows_dir=folder,
                entrypoints=entrypoints,
                default_entrypoint=spec.get("default_entrypoint"),
            )
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a bundle is not a secret
            os.replace(tmp, out / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
        written.append(out / name)
    keep = {path.name for path in written}
    for stale in out.glob("*.flow"):
        if stale.name not in keep:
            stale.unlink()  # a bundle whose source folder was removed or renamed
    (out / STAMP).write_text(sources_digest(src) + "\n")
    return written


def ensure_built(src: Path = SOURCES_DIR, out: Path = BUILT_DIR) -> Path:
    """The built folder, rebuilt first when its stamp does not match the sources."""
    if not is_current(src, out):
        build_samples(src, out)
    return out


@click.group()
def flows() -> None:
    """The sample workflows carried by this repository (examples/flows)."""


@flows.command("build")
@click.option("--src", type=click.Path(path_type=Path), default=SOURCES_DIR, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=BUILT_DIR, show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even when the built folder is current.")
def build(src: Path, out: Path, force: bool) -> None:
    """Pack the sample bundles into OUT (what ABSTRACTGATEWAY_FLOWS_DIR should point at)."""
    if not force and is_current(src, out):
        click.echo(f"{out}: up to date")
        return
    written = build_samples(src, out)
    click.echo(f"{out}: built {len(written)} bundles ({', '.join(p.stem for p in written)})")
