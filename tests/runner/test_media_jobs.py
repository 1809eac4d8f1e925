"""Media jobs through the runner: a child run of the target run, results as the parent's artifacts,
unsupported modalities answered as such, and a job interrupted by a crash retried, then failed."""

from __future__ import annotations

import threading

import pytest

from runner_service.media import jobs
from runner_service.media.backends import MediaFile, MediaOutput
from runner_service.worker import Worker, WorkerSettings
from shared_store import LeaseHolder
from shared_store.media_jobs import enqueue_media_job, job_state
from tests.runner.conftest import Gateway


class _Killed(BaseException):
    """Stands for SIGKILL inside the backend call: nothing after it runs."""


def _worker(gateway: Gateway, owner: str) -> tuple[LeaseHolder, Worker]:
    fence = LeaseHolder(gateway.db, owner, lease_s=30.0)
    settings = WorkerSettings(artifacts_dir=gateway.tmp_path / "artifacts")
    return fence, Worker(gateway.db, fence, settings, stopping=threading.Event())


def test_an_unsupported_modality_answers_supported_false_as_a_child_run(gateway: Gateway) -> None:
    parent = gateway.start("bench-echo", {"message": "x"})
    gateway.runner()
    gateway.wait_status(parent, "completed")
    job = enqueue_media_job(
        gateway.db, kind="video_generate", request={"prompt": "a cat"}, parent_run_id=parent
    )
    gateway.wait_status(job.run_id, "completed")
    state = job_state(gateway.db, job.run_id)
    assert state is not None and state.output is not None
    assert (state.output["ok"], state.output["supported"], state.output["code"]) == (
        False,
        False,
        "video_unavailable",
    )
    assert gateway.db.query_one(
        "SELECT parent_run_id, workflow_id FROM runs WHERE run_id = ?", (job.run_id,)
    ) == (
        parent,
        "media:video_generate",
    )
    assert [r["status"] for _, r in gateway.ledger(job.run_id)] == ["started", "completed"]


def test_results_are_artifacts_of_the_parent_and_a_crashed_job_is_retried(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = gateway.start("bench-echo", {"message": "x"})
    calls: list[str] = []

    def flaky_tts(request: dict, inputs: dict) -> MediaOutput:
        calls.append(request["text"])
        if len(calls) == 1:
            raise _Killed
        return MediaOutput(
            [MediaFile(b"RIFF....WAVE", "audio/wav", "speech.wav", "audio_artifact")], {"x": 1}
        )

    monkeypatch.setitem(jobs.BACKENDS, "tts", ("backends", "flaky_tts"))
    monkeypatch.setattr("runner_service.media.backends.flaky_tts", flaky_tts, raising=False)
    job = enqueue_media_job(gateway.db, kind="tts", request={"text": "hi"}, parent_run_id=parent).run_id

    fence, first = _worker(gateway, "first")
    assert [lease.run_id for lease in fence.claim(10)] == [parent, job]
    with pytest.raises(_Killed):
        first.process(job)  # dies inside the backend call; its lease goes back (a real kill: expiry)
    assert gateway.run(job)["status"] == "running"

    fence2, second = _worker(gateway, "second")
    assert job in [lease.run_id for lease in fence2.claim(10)]
    second.process(job)
    state = job_state(gateway.db, job)
    assert state is not None and state.status == "completed", state
    ref = state.output["audio_artifact"]
    assert ref["content_type"] == "audio/wav" and ref["size_bytes"] == 12 and len(ref["sha256"]) == 64
    owner = gateway.db.query_one("SELECT run_id FROM artifacts WHERE artifact_id = ?", (ref["$artifact"],))
    assert owner == (parent,), "the result is an artifact of the parent run"
    records = [r for _, r in gateway.ledger(job)]
    assert [(r["status"], r["attempt"]) for r in records] == [
        ("started", 1),
        ("started", 2),
        ("completed", 2),
    ]
    assert calls == ["hi", "hi"]


def test_a_job_interrupted_too_often_fails_with_the_reason(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_dies(request: dict, inputs: dict) -> MediaOutput:
        raise _Killed

    monkeypatch.setitem(jobs.BACKENDS, "music_generate", ("backends", "always_dies"))
    monkeypatch.setattr("runner_service.media.backends.always_dies", always_dies, raising=False)
    job = enqueue_media_job(
        gateway.db, kind="music_generate", request={"prompt": "p"}, parent_run_id=None
    ).run_id
    for attempt in range(jobs.MAX_ATTEMPTS):
        fence, worker = _worker(gateway, f"w{attempt}")
        assert fence.claim(10)
        with pytest.raises(_Killed):
            worker.process(job)
    fence, last = _worker(gateway, "last")
    assert fence.claim(10)
    last.process(job)
    state = job_state(gateway.db, job)
    assert state is not None and state.status == "failed"
    assert state.error == f"music_generate job interrupted {jobs.MAX_ATTEMPTS} times; giving up"
    assert gateway.ledger(job)[-1][1]["status"] == "failed"


def test_an_unknown_input_artifact_fails_the_job_cleanly(gateway: Gateway) -> None:
    job = enqueue_media_job(
        gateway.db, kind="transcribe", request={"audio_artifact": {"$artifact": "nope"}}, parent_run_id=None
    ).run_id
    gateway.runner()
    state_row = gateway.wait_status(job, "failed", "completed")
    state = job_state(gateway.db, job)
    assert state is not None
    # Without the media extra the modality is unavailable; with it, the missing input fails the job.
    assert (state_row["status"] == "failed" and "not found" in str(state.error)) or state.output[
        "supported"
    ] is False
