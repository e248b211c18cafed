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
from worker.health import WorkerHealth
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
    monkeypatch.setattr("runpod.serverless.progress_update", lambda job, data: sent.append((job["id"], data)))
    out = asyncio.run(handler.handler(_job()))
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert sent and {job_id for job_id, _ in sent} == {"j1"}
    assert {"stage", "step", "steps", "percent", "elapsed", "eta"} == set(sent[0][1])


def test_cancelling_the_task_interrupts_comfyui_and_the_next_job_works(runtime) -> None:
    set_faults(runtime.settings, {"mode": "step_delay", "seconds": 0.5})

    async def run_and_cancel() -> None:
        task = asyncio.create_task(handler.handler(_job("cancel-me")))
        await asyncio.sleep(1.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_and_cancel())
    state = requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()
    assert [i["effective"] for i in state["interrupts"]] == [True]
    assert state["running_prompt_id"] is None
    assert files_in(runtime.settings.comfy.input_dir) == []
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


# --- self-healing: refresh_worker after unrecoverable GPU errors (worker/health.py) ---------------

CUDA_FAULT = {"mode": "runtime_error", "exception_type": "RuntimeError",
              "exception_message": "CUDA error: an illegal memory access was encountered"}  # fmt: skip
OOM = {"mode": "runtime_error"}  # the double's default: torch.OutOfMemoryError with a CUDA OOM text


@pytest.fixture
def health(monkeypatch: pytest.MonkeyPatch) -> WorkerHealth:
    fresh = WorkerHealth()
    monkeypatch.setattr(handler, "HEALTH", fresh)
    return fresh


def _run(job: dict) -> dict:
    return asyncio.run(handler.handler(job))


def test_a_cuda_error_asks_runpod_for_a_new_worker(runtime, health) -> None:
    set_faults(runtime.settings, CUDA_FAULT)
    out = _run(_job("cuda"))
    assert out["refresh_worker"] is True
    error = out["error"]
    assert isinstance(error, str) and error.startswith("execution_failed: node ") and "KSamplerAdvanced" in error
    assert "RuntimeError: CUDA error: an illegal memory access was encountered" in error
    assert "GPU/CUDA fault" in error and "replaces this worker" in error


def test_one_oom_is_the_users_problem_two_in_a_row_replace_the_worker(runtime, health) -> None:
    set_faults(runtime.settings, OOM)
    first = _run(_job("oom-1"))
    assert "refresh_worker" not in first
    assert first["error"].startswith("execution_failed: ") and "torch.OutOfMemoryError" in first["error"]
    assert "fewer frames" in first["error"] and "smaller size" in first["error"]
    set_faults(runtime.settings, OOM)
    second = _run(_job("oom-2"))
    assert second["refresh_worker"] is True and "2 jobs in a row" in second["error"]


def test_a_success_between_two_ooms_keeps_the_worker(runtime, health) -> None:
    set_faults(runtime.settings, OOM)
    assert "refresh_worker" not in _run(_job("oom-1"))
    assert _run(_job("ok", seed=3))["files_count"] == 1
    set_faults(runtime.settings, OOM)
    out = _run(_job("oom-2"))
    assert "refresh_worker" not in out and "fewer frames" in out["error"]
    assert health.oom_streak == 1


def test_ordinary_errors_keep_the_worker(runtime, health) -> None:
    set_faults(runtime.settings, {"mode": "runtime_error", "node_type": "LoadImage", "exception_type": "PIL.UnidentifiedImageError",
                                  "exception_message": "cannot identify image file '/comfyui/input/corrupt.png'"})  # fmt: skip
    out = _run(_job("corrupt"))
    assert out == {"error": "execution_failed: node 1 (LoadImage) raised PIL.UnidentifiedImageError: "
                            "cannot identify image file '/comfyui/input/corrupt.png'"}  # fmt: skip
    bad = _run({"id": "bad", "input": {"prompt": "x", "image": base64.b64encode(b"not an image").decode()}})
    assert bad["error"].startswith("invalid_image: ") and "refresh_worker" not in bad


def test_comfyui_that_cannot_be_restarted_still_refreshes(runtime, health, monkeypatch) -> None:
    def down(*_a, **_k):
        raise ComfyUnavailable("ComfyUI is down and 2 restarts in a row failed; this worker needs replacing", refresh_worker=True)

    monkeypatch.setattr(handler, "generate_video", down)
    out = _run(_job("down"))
    assert out == {"error": "comfyui_unavailable: ComfyUI is down and 2 restarts in a row failed; this worker needs replacing",
                   "refresh_worker": True}  # fmt: skip
