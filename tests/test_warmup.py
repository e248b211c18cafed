"""The boot warm-up against the ComfyUI double launched as the worker's child, and through RunPod's local API."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import pytest
import requests

import worker.warmup as warmup_module
from tests.harness import (
    decode_mp4,
    files_in,
    free_port,
    png_b64,
    process_env,
    set_faults,
    start_worker_api,
    stop_worker_api,
)
from worker.pipeline import Runtime, generate_video
from worker.tasks import REGISTRY
from worker.warmup import WARMUP_JOB_ID, run_warmup, start_warmup, warmup_input, warmup_runtime


@pytest.fixture
def warmup_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="worker.warmup")
    return caplog


def _state(runtime: Runtime) -> dict:
    return requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()


def _node_inputs(prompt: dict, class_type: str) -> list[dict]:
    return [node["inputs"] for node in prompt.values() if node["class_type"] == class_type]


def _job(seed: int = 5) -> dict:
    return {"prompt": "a red ball bounces", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5, "seed": seed}}


def _assert_no_files(runtime: Runtime) -> None:
    s = runtime.settings.comfy
    assert (files_in(s.input_dir), files_in(s.output_dir), files_in(s.temp_dir)) == ([], [], [])


def test_warmup_settings_bound_the_prompt_and_keep_nothing(make_runtime) -> None:
    runtime = make_runtime(WARMUP_TIMEOUT="123", KEEP_FILES="true", OUTPUT_MODE="auto")
    warm = warmup_runtime(runtime)
    assert (warm.settings.job_timeout, warm.settings.keep_files) == (123.0, False)
    assert warm.server is runtime.server and warm.client is runtime.client and warm.templates is runtime.templates
    assert (runtime.settings.job_timeout, runtime.settings.keep_files) == (60.0, True)  # the jobs' own settings
    job = warmup_input(REGISTRY["i2v"])
    assert set(job["options"]) == {"width", "height", "length", "seed"}  # default steps
    assert job["task"] == "i2v" and job["image"] and job["output_mode"] == "base64"  # never uploaded
    assert warmup_input(REGISTRY["i2v"]) == job  # fixed: same image, same seed


def test_warmup_runs_one_small_prompt_logs_its_time_and_leaves_no_files(make_runtime, warmup_log, monkeypatch) -> None:
    calls: list[dict] = []
    real = warmup_module.generate_video

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(warmup_module, "generate_video", spy)
    runtime = make_runtime(WARMUP="true", KEEP_FILES="true")
    result = start_warmup(runtime).wait(30)
    assert result is not None and result.ok and result.error == "" and result.seconds > 0
    assert calls and calls[0]["send_progress"] is None  # no progress updates
    prompts = _state(runtime)["prompts"]
    assert len(prompts) == 1
    prompt = prompts[0]["body"]["prompt"]
    size = _node_inputs(prompt, "WanImageToVideo")[0]
    assert (size["width"], size["height"], size["length"]) == (64, 64, 5)
    samplers = _node_inputs(prompt, "KSamplerAdvanced")
    assert {(s["steps"], s["noise_seed"]) for s in samplers} == {(6, 1)}
    assert any(f"wan22_{WARMUP_JOB_ID}_" in str(v) for v in _node_inputs(prompt, "VHS_VideoCombine")[0].values())
    _assert_no_files(runtime)  # removed although KEEP_FILES=true
    assert any(r.getMessage().startswith("warm-up done in") and "models are loaded" in r.getMessage() for r in warmup_log.records)


def test_failing_warmup_is_logged_with_its_error_and_the_next_job_succeeds(make_runtime, warmup_log) -> None:
    runtime = make_runtime(WARMUP="true")
    set_faults(runtime.settings, {"mode": "runtime_error", "exception_type": "RuntimeError",
                                  "exception_message": "CUDA error: an illegal memory access was encountered"})  # fmt: skip
    result = run_warmup(runtime)
    assert not result.ok and result.error.startswith("execution_failed: node ") and "illegal memory access" in result.error
    failed = [r for r in warmup_log.records if r.levelno == logging.ERROR]
    assert len(failed) == 1
    assert failed[0].getMessage().startswith("warm-up failed after ") and "execution_failed: node " in failed[0].getMessage()
    assert "keeps taking jobs" in failed[0].getMessage()
    out = generate_video(_job(), "after-warmup", runtime)
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    _assert_no_files(runtime)


def test_frozen_comfyui_is_bounded_by_warmup_timeout_then_restarted(make_runtime, warmup_log, monkeypatch) -> None:
    monkeypatch.setattr("comfy_bootstrap.execution.INTERRUPT_GRACE", 1.0)
    runtime = make_runtime(WARMUP="true", WARMUP_TIMEOUT="2", COMFY_HTTP_TIMEOUT="1")
    set_faults(runtime.settings, {"mode": "freeze"})
    started = time.monotonic()
    result = start_warmup(runtime).wait(30)
    assert result is not None and not result.ok and time.monotonic() - started < 20
    assert result.error.startswith("timeout: ") and "WARMUP_TIMEOUT=2 s" in result.error
    assert runtime.server.restarts == 1  # ComfyUI did not confirm the interrupt
    assert any("warm-up failed after" in r.getMessage() and "timeout:" in r.getMessage() for r in warmup_log.records)
    assert generate_video(_job(seed=6), "after-freeze", runtime)["length"] == 5


def test_a_job_sent_during_the_warmup_waits_behind_it_and_completes(make_runtime) -> None:
    runtime = make_runtime(WARMUP="true")
    set_faults(runtime.settings, {"mode": "step_delay", "seconds": 0.25})  # times=1: the warm-up only
    warm = start_warmup(runtime)
    deadline = time.monotonic() + 10
    while _state(runtime)["running_prompt_id"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert warm.running
    out = generate_video(_job(seed=9), "during-warmup", runtime)
    result = warm.wait(30)
    assert result is not None and result.ok
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5 and out["seed"] == 9
    executions = _state(runtime)["executions"]
    assert [e["status_str"] for e in executions] == ["success", "success"]
    assert executions[0]["faults"] == ["step_delay"] and executions[1]["prompt_id"] == out["prompt_id"]
    assert out["timings"]["queue_wait"] > 0  # it queued behind the warm-up
    _assert_no_files(runtime)


def test_warmup_off_runs_nothing(make_runtime, warmup_log) -> None:
    runtime = make_runtime()
    assert runtime.settings.warmup is False
    assert start_warmup(runtime) is None
    time.sleep(0.2)
    assert _state(runtime)["prompts"] == []
    assert any("warm-up off" in r.getMessage() for r in warmup_log.records)


def test_worker_api_with_warmup_answers_a_job_and_logs_the_warmup(tmp_path: Path) -> None:
    env = process_env(tmp_path, WARMUP="true")
    api_port = free_port()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = start_worker_api(env, api_port, out)
    try:
        resp = requests.post(f"http://127.0.0.1:{api_port}/runsync", json={"input": _job()}, timeout=120)
        body = resp.json()
        assert body["status"] == "COMPLETED", body.get("error")
        assert decode_mp4(base64.b64decode(body["output"]["video"]))["frames"] == 5
        deadline = time.monotonic() + 10  # the job normally waits for the warm-up; allow for a slow log flush
        while "warm-up done in" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text(errors="replace")
        assert f"[{WARMUP_JOB_ID}] worker.warmup: warm-up done in" in text
        assert files_in(Path(env["WORKER_DIR"]) / "output") == []
    finally:
        stop_worker_api(proc)
