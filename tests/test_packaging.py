"""What an install puts where: the migrations live inside our package (shared_store.migrations), never
as a top-level `migrations` in site-packages, and the migrator finds every one of them from a wheel
and from an editable install alike.

Both installs go into a scratch venv that borrows this venv's dependencies through a path file (its
.pth files are not run, so the editable finder of the outer install stays out), and the probes run
outside the repository without PYTHONPATH: only what the install put there is importable."""

from __future__ import annotations

import importlib.util
import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SKIP_COPY = shutil.ignore_patterns(
    ".git", ".venv", "data", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
    ".grimp_cache", ".import_linter_cache",
    ".mypy_cache", "tests", "bench", "docs", "examples",
)  # fmt: skip
# The tree's own packages and modules (tests/ and bench/ are not shipped; migrations/ ships mapped).
PACKAGES = sorted(
    p.name
    for p in REPO.iterdir()
    if (p / "__init__.py").is_file() and p.name not in ("tests", "bench", "migrations")
)
MODULES = sorted(p.name for p in REPO.glob("*.py"))
# What the installed migrator reports: where it reads from, and every file and version it finds.
PROBE = """
import json
from pathlib import Path
from shared_store import Database, migrate
from shared_store.migrate import known_migrations, shipped_migrations

root = shipped_migrations()
files = sorted(
    str(p.relative_to(Path(str(root)))) for p in Path(str(root)).rglob("*.sql")
)
db = Database(str(Path.cwd() / "probe.sqlite3"))
print(json.dumps({
    "root": str(root),
    "files": files,
    "versions": [m.version for m in known_migrations()],
    "applied": migrate(db),
}))
"""


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, check=False, cwd=cwd
    )


def _repo_sql() -> list[str]:
    return sorted(str(p.relative_to(REPO / "migrations")) for p in (REPO / "migrations").rglob("*.sql"))


def _isolation() -> list[str]:
    # With setuptools at hand the build needs no download; else pip fetches the backend.
    return [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "abstractgateway"
    shutil.copytree(REPO, path, ignore=SKIP_COPY)
    return path


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *_isolation(), "-q", "-w", out, source)
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = out.glob("abstractgateway-*.whl")
    return found


def _scratch_venv(path: Path) -> Path:
    """A venv without pip that sees this venv's dependencies (the outer pip installs into it)."""
    assert _run(sys.executable, "-m", "venv", "--without-pip", path).returncode == 0
    python = path / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(purelib) / "outer_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _probe(python: Path, cwd: Path) -> dict[str, object]:
    cwd.mkdir(parents=True, exist_ok=True)
    done = _run(python, "-I", "-c", PROBE, cwd=cwd)  # -I: no PYTHONPATH, no cwd on sys.path
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_the_wheel_ships_migrations_inside_our_package_and_every_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.split("/")[0] == "migrations"], "a top-level migrations/ ships"
    shipped = sorted(
        n.removeprefix("shared_store/migrations/") for n in names if n.startswith("shared_store/migrations/")
    )
    assert [n for n in shipped if n.endswith(".sql")] == _repo_sql()
    assert "__init__.py" in shipped
    # The package list in pyproject.toml is written out by hand (the migrations mapping needs it):
    # a package folder of the tree missing there would be missing from every install.
    assert {"api_service", "runner_service", "shared_store"} <= set(PACKAGES)
    for package in PACKAGES:
        for init in sorted((REPO / package).rglob("__init__.py")):
            assert str(init.relative_to(REPO)) in names, f"{init.parent.relative_to(REPO)} is not packaged"
    assert set(MODULES) <= set(names), "a top-level module is not in py-modules"
    # The console's static files (no __init__.py: data folders listed as packages).
    console = sorted(
        str(p.relative_to(REPO)) for p in (REPO / "api_service/console").rglob("*") if p.is_file()
    )
    assert console and set(console) <= set(names)


@pytest.mark.slow
def test_the_migrator_finds_every_migration_installed_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    python = _scratch_venv(tmp_path / "venv")
    installed = _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
                     "--no-compile", wheel)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    found = _probe(python, tmp_path / "elsewhere")
    root = Path(str(found["root"]))
    assert root.parts[-2:] == ("shared_store", "migrations") and "site-packages" in root.parts
    assert found["files"] == _repo_sql()
    latest = len(list((REPO / "migrations").glob("[0-9]*.sql")))
    assert found["versions"] == list(range(1, latest + 1)) == found["applied"]


@pytest.mark.slow
def test_the_migrator_finds_every_migration_in_an_editable_install(source: Path, tmp_path: Path) -> None:
    python = _scratch_venv(tmp_path / "venv")
    installed = _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
                     *_isolation(), "-e", source)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    found = _probe(python, tmp_path / "elsewhere")
    assert Path(str(found["root"])) == source / "migrations"  # the checkout's own files, not a copy
    assert found["files"] == _repo_sql()
    latest = len(list((REPO / "migrations").glob("[0-9]*.sql")))
    assert found["versions"] == list(range(1, latest + 1)) == found["applied"]
