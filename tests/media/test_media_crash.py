"""A runner SIGKILLed in the middle of a real media job: after its lease expires another runner retries
the job and finishes it; nothing is lost, the ledger shows both attempts."""

from __future__ import annotations

import pytest

pytest.importorskip("piper", reason="the media stack is not installed (piper missing)")

from shared_store.media_jobs import enqueue_media_job, job_state
from tests.runner.conftest import Gateway


def test_a_killed_runner_s_tts_job_is_retried_after_lease_expiry(gateway: Gateway) -> None:
    offline = {"HF_HUB_OFFLINE": "1", "ABSTRACTVOICE_ALLOW_DOWNLOADS": "0"}
    offline["ABSTRACTGATEWAY_DATA_DIR"] = str(gateway.tmp_path)
    parent = gateway.start("bench-echo", {"message": "x"})
    first = gateway.runner("first", lease_s=1.0, **offline)
    gateway.wait_status(parent, "completed")
    text = "a sentence long enough to keep the voice busy for a moment " * 3
    job = enqueue_media_job(gateway.db, kind="tts", request={"text": text}, parent_run_id=parent).run_id
    # Killed once the job has started (its attempt counted, the voice loading or speaking).
    gateway.wait(lambda: any(r["status"] == "started" for _, r in gateway.ledger(job)), "the job to start")
    first.kill()
    assert job_state(gateway.db, job).status == "running", "killed mid-job"

    gateway.runner("second", lease_s=1.0, **offline)
    gateway.wait_status(job, "completed", "failed", timeout=120)
    state = job_state(gateway.db, job)
    assert state is not None and state.status == "completed", state
    assert state.output["ok"] is True and state.output["audio_artifact"]["content_type"] == "audio/wav"
    attempts = [(r["status"], r["attempt"]) for _, r in gateway.ledger(job)]
    assert attempts[0] == ("started", 1) and attempts[-1] == ("completed", 2), attempts
    owner = gateway.db.query_one(
        "SELECT run_id FROM artifacts WHERE artifact_id = ?", (state.output["audio_artifact"]["$artifact"],)
    )
    assert owner == (parent,), "the result is an artifact of the target run"
