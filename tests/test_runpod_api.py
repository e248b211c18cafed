"""The worker as RunPod runs it: ``python handler.py --rp_serve_api`` in a subprocess, real HTTP.

The worker launches the ComfyUI double as its child (COMFY_DIR=tests/comfy_double), so this
covers boot, the RunPod SDK's job loop, error strings (RunPod types ``error`` as a string) and a
real MP4 decoded with PyAV.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness import (
    REPO,
    decode_mp4,
    files_in,
    free_port,
    png_b64,
    process_env,
    running_worker,
    start_worker_api,
    stop_worker_api,
)
from tests.harness import (
    WorkerAPI as Worker,
)
from worker.settings import Settings


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with running_worker(tmp_path_factory.mktemp("rp")) as api:
        yield api


def _small(**options) -> dict:
    return {"prompt": "a red ball", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5, **options}}


def test_default_job_through_runsync_returns_a_playable_mp4(worker: Worker) -> None:
    job = json.loads((REPO / "test_input.json").read_text())["input"]
    body = worker.runsync(job)
    assert body["status"] == "COMPLETED", body.get("error")
    out = body["output"]
    video = decode_mp4(base64.b64decode(out["video"]))
    opts = job["options"]
    assert (video["width"], video["height"], video["frames"], video["rate"]) == (opts["width"], opts["height"], opts["length"], 24.0)
    assert {"video", "filename", "prompt_id", "files_count", "seed", "timings"} <= set(out)
    assert out["seed"] == 42


def test_defaults_of_the_original_api(worker: Worker) -> None:
    body = worker.runsync({"prompt": "waves", "image": png_b64()})
    assert body["status"] == "COMPLETED", body.get("error")
    video = decode_mp4(base64.b64decode(body["output"]["video"]))
    assert (video["width"], video["height"], video["frames"], video["rate"]) == (832, 832, 81, 24.0)
    assert 0 <= body["output"]["seed"] < 2**64


def test_bad_input_fails_with_one_clear_string(worker: Worker) -> None:
    body = worker.runsync({"prompt": "x", "image": png_b64(), "options": {"width": 70, "length": 6, "colour": "red"}})
    assert body["status"] == "FAILED"
    error = body["error"]
    assert isinstance(error, str) and error.startswith("invalid_input: ")
    assert "options.width: 70 is not a multiple of 16" in error and "options.length: 6" in error and "options.colour" in error


def test_missing_model_is_named_with_the_folders_searched(worker: Worker) -> None:
    high = Path(worker.env["VOLUME_PATH"]) / "models" / "diffusion_models" / Settings().model_names["MODEL_HIGH_NOISE"]
    data = high.read_bytes()
    high.unlink()
    try:
        body = worker.runsync(_small())
    finally:
        high.write_bytes(data)
    assert body["status"] == "FAILED"
    assert body["error"].startswith("models_missing: ") and Settings().model_names["MODEL_HIGH_NOISE"] in body["error"]
    assert "models/unet" in body["error"] and "models/diffusion_models" in body["error"]
    assert worker.runsync(_small())["status"] == "COMPLETED"


def test_runtime_error_is_reported_and_the_worker_stays_healthy(worker: Worker) -> None:
    worker.fault({"mode": "runtime_error"})
    body = worker.runsync(_small())
    assert body["status"] == "FAILED"
    assert body["error"].startswith("execution_failed: node ") and "KSamplerAdvanced" in body["error"]
    assert "torch.OutOfMemoryError" in body["error"]
    assert worker.runsync(_small(seed=3))["status"] == "COMPLETED"


def test_corrupt_image_is_refused_before_comfyui(worker: Worker) -> None:
    body = worker.runsync({"prompt": "x", "image": base64.b64encode(b"not an image at all").decode()})
    assert body["status"] == "FAILED" and body["error"].startswith("invalid_image: image:")


def test_no_payloads_in_the_worker_log_and_no_files_left(worker: Worker) -> None:
    image = png_b64(120, 80, (1, 2, 3))
    assert worker.runsync({"prompt": "x", "image": image, "options": {"width": 64, "height": 64, "length": 5}})["status"] == "COMPLETED"
    time.sleep(0.5)
    log = worker.log.read_text(errors="replace")
    assert image[:200] not in log
    assert "AAAA" * 40 not in log  # no base64 blob of any video
    work = Path(worker.env["WORKER_DIR"])
    assert files_in(work / "input") == [] and files_in(work / "output") == []


def test_sigterm_stops_comfyui_too(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    api_port = free_port()
    proc = start_worker_api(env, api_port)
    try:
        comfy = f"http://127.0.0.1:{env['COMFY_PORT']}/system_stats"
        assert requests.get(comfy, timeout=5).status_code == 200
        stop_worker_api(proc)
        assert proc.returncode is not None
        with pytest.raises(requests.ConnectionError):
            requests.get(comfy, timeout=2)
    finally:
        stop_worker_api(proc)


def test_test_input_mode_exits_zero_without_logging_the_video(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    done = subprocess.run([sys.executable, "handler.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "AAAA" * 40 not in done.stdout + done.stderr
    assert "job done" in done.stderr
