"""The async RunPod handler: error strings, cancellation of the task, progress to RunPod."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import requests

import handler
from comfy_bootstrap.errors import ComfyUnavailable
from comfy_bootstrap.gpu import DeviceCheck
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

FORGED_CUDA = {"mode": "runtime_error", "exception_type": "ValueError",
               "exception_message": "CUDA error: an illegal memory access was encountered"}  # fmt: skip
CUDA_FAULT = {"mode": "runtime_error", "exception_type": "torch.AcceleratorError",
              "exception_message": "CUDA error: an illegal memory access was encountered\nSearch for `cudaErrorIllegalAddress'"}  # fmt: skip
OOM = {"mode": "runtime_error"}  # the double's default: torch.OutOfMemoryError with a CUDA OOM text


class DeviceChecks:
    """The GPU check, answering ``problem`` (None: healthy); records the Pythons it was asked with."""

    def __init__(self, problem: str | None = None):
        self.problem, self.pythons = problem, []

    def __call__(self, python: str) -> DeviceCheck:
        self.pythons.append(python)
        return DeviceCheck(self.problem, 1.0)


@pytest.fixture
def checks() -> DeviceChecks:
    return DeviceChecks()


@pytest.fixture
def health(monkeypatch: pytest.MonkeyPatch, checks: DeviceChecks) -> WorkerHealth:
    fresh = WorkerHealth(device_check=checks)
    monkeypatch.setattr(handler, "HEALTH", fresh)
    return fresh


def _run(job: dict) -> dict:
    return asyncio.run(handler.handler(job))


def test_a_node_raising_a_cuda_text_is_no_gpu_fault(runtime, health, checks) -> None:
    # Once refresh_worker: true, a cold start at will for anyone who can make a node raise this text.
    pid = runtime.server.pid
    set_faults(runtime.settings, FORGED_CUDA)
    out = _run(_job("forged"))
    assert out == {"error": "execution_failed: node 14 (KSamplerAdvanced) raised ValueError: CUDA error: an illegal memory "
                            "access was encountered"}  # fmt: skip
    assert checks.pythons == [] and runtime.server.pid == pid


def test_a_cuda_error_on_a_failing_gpu_asks_runpod_for_a_new_worker(runtime, health, checks) -> None:
    checks.problem = "nvidia-smi failed: exit code 15: Unable to determine the device handle for GPU0000:01:00.0: GPU is lost"
    set_faults(runtime.settings, CUDA_FAULT)
    out = _run(_job("cuda"))
    assert out["refresh_worker"] is True
    error = out["error"]
    assert error.startswith("execution_failed: node 14 (KSamplerAdvanced) raised torch.AcceleratorError: CUDA error: an illegal")
    assert "the GPU check after the CUDA error failed (nvidia-smi failed: exit code 15: " in error
    assert checks.pythons == [runtime.settings.comfy.comfy_python]


def test_a_cuda_error_on_a_healthy_gpu_restarts_comfyui_and_the_next_job_works(runtime, health, checks) -> None:
    pid = runtime.server.pid
    set_faults(runtime.settings, CUDA_FAULT)
    out = _run(_job("cuda"))
    assert "refresh_worker" not in out
    assert "the GPU checked healthy in a fresh process (1.0 s), so ComfyUI was restarted with a fresh CUDA context" in out["error"]
    assert runtime.server.pid != pid and runtime.server.restarts == 1
    assert _run(_job("next", seed=2))["files_count"] == 1


def test_a_node_that_finds_no_space_answers_storage_full_and_the_next_job_works(runtime, health) -> None:
    set_faults(runtime.settings, {"mode": "runtime_error", "node_type": "VHS_VideoCombine", "exception_type": "OSError",
                                  "exception_message": "[Errno 28] No space left on device: '/tmp/w/output/wan22_00001.mp4'"})  # fmt: skip
    out = _run(_job("full"))
    assert out["error"].startswith("storage_full: node 17 (VHS_VideoCombine) raised OSError: [Errno 28] No space left on device")
    assert "WORKER_DIR" in out["error"] and "refresh_worker" not in out
    assert _run(_job("next", seed=2))["files_count"] == 1


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
