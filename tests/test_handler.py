"""The async RunPod handler: error strings, cancellation of the task, progress to RunPod."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import requests

import handler
from comfy_bootstrap.errors import ComfyUnavailable
from tests.harness import decode_mp4, files_in, png_b64, set_faults, settings_for
from worker.errors import InvalidInput
from worker.pipeline import Runtime


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rt = Runtime.create(settings_for(tmp_path))
    rt.server.start()
    monkeypatch.setattr(handler, "RUNTIME", rt)
    yield rt
    rt.server.stop()


def _job(job_id: str = "j1", **options) -> dict:
    opts = {"width": 64, "height": 64, "length": 5, **options}
    return {"id": job_id, "input": {"prompt": "a boat", "image": png_b64(), "options": opts}}


def test_error_response_is_one_string_with_the_code() -> None:
    assert handler.error_response(InvalidInput("options.width: bad")) == {"error": "invalid_input: options.width: bad"}
    crash = ComfyUnavailable("gone", refresh_worker=True)
    assert handler.error_response(crash) == {"error": "comfyui_unavailable: gone", "refresh_worker": True}


def test_a_job_completes_and_progress_reaches_runpod(runtime, monkeypatch) -> None:
    sent: list[tuple[str, dict]] = []
    monkeypatch.setenv("RUNPOD_WEBHOOK_POST_OUTPUT", "http://127.0.0.1:9/done")
    monkeypatch.setattr(handler.runpod.serverless, "progress_update", lambda job, data: sent.append((job["id"], data)))
    out = asyncio.run(handler.handler(_job()))
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert sent and {job_id for job_id, _ in sent} == {"j1"}
    assert {"stage", "step", "steps", "percent"} == set(sent[0][1])


def test_cancelling_the_task_interrupts_comfyui_and_the_next_job_works(runtime) -> None:
    set_faults(runtime.settings, {"mode": "step_delay", "seconds": 0.5})

    async def run_and_cancel() -> None:
        task = asyncio.create_task(handler.handler(_job("cancel-me")))
        await asyncio.sleep(1.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_and_cancel())
    state = requests.get(f"{runtime.settings.base_url}/__double__/state", timeout=5).json()
    assert [i["effective"] for i in state["interrupts"]] == [True]
    assert state["running_prompt_id"] is None
    assert files_in(runtime.settings.input_dir) == []
    out = asyncio.run(handler.handler(_job("next", seed=2)))
    assert out["files_count"] == 1


def test_a_bug_in_the_worker_is_answered_and_the_worker_keeps_serving(runtime, monkeypatch) -> None:
    def boom(*_a, **_k):
        raise KeyError("surprise")

    monkeypatch.setattr(handler, "generate_video", boom)
    assert asyncio.run(handler.handler(_job()))["error"].startswith("internal_error: KeyError")


def test_not_started_worker_answers_clearly(monkeypatch) -> None:
    monkeypatch.setattr(handler, "RUNTIME", None)
    assert asyncio.run(handler.handler(_job()))["error"].startswith("worker_not_ready:")
