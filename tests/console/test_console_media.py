"""A generated image shows inline in the run console (tiny random Stable Diffusion pipeline built
here, nothing downloads; the runner has the media extra)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..media.tiny_pipelines import build_tiny_sd
from .conftest import Deployment, login, screenshot

for _name in ("torch", "diffusers", "transformers", "abstractvision"):
    pytest.importorskip(_name, reason=f"the media stack is not installed ({_name} missing)")


@pytest.fixture(scope="module")
def media_deployment(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("console-media")
    model = build_tiny_sd(tmp / "tiny-sd")
    dep = Deployment(tmp, flows, runner_env={"ABSTRACTGATEWAY_IMAGE_MODEL": str(model)})
    dep.start_api()
    dep.start_runner()
    try:
        yield dep
    finally:
        dep.close()


def test_a_generated_image_shows_inline(browser: Any, media_deployment: Deployment, tmp_path: Path) -> None:
    dep = media_deployment
    run_id = dep.start("bench-ask")
    dep.wait_run(run_id, lambda v: v["status"] == "waiting")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        login(page, dep.url)
        page.goto(f"{dep.url}/console/#/runs/{run_id}")
        page.wait_for_selector("#ask-card")
        with dep.client() as client:
            made = client.post(
                f"/api/gateway/runs/{run_id}/images/generate",
                params={"wait_s": 180},
                json={"prompt": "a red square", "width": 64, "height": 64, "steps": 2, "seed": 3},
                headers={"X-Request-ID": "req-image-1"},
                timeout=200,
            )
        assert made.status_code == 200 and made.json()["ok"] is True, made.text
        artifact_id = made.json()["image_artifact"]["$artifact"]
        image = page.wait_for_selector(f"[data-artifact-id='{artifact_id}'] img")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
        assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]
        assert image.get_attribute("src").startswith("blob:")  # fetched with the token, not by URL
        page.wait_for_selector(f"#children a[href='#/runs/{made.json()['child_run_id']}']")
        screenshot(page, tmp_path, "run-image")
        # The job's runner log lines carry the id of the request that asked for it.
        lines = [
            json.loads(x) for x in (dep.tmp / "runner.log").read_text().splitlines() if x.startswith("{")
        ]
        job = [
            x for x in lines if x.get("event") == "media_job_started" and x.get("kind") == "image_generate"
        ]
        assert job and all(x.get("request_id") == "req-image-1" for x in job)
    finally:
        context.close()
