"""Attach mode (``COMFY_URL``): the worker uses a ComfyUI it did not start, for development."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests

from comfy_bootstrap.errors import ComfyBootError, ComfyUnavailable
from tests.harness import decode_mp4, files_in, free_port, png_b64
from worker.pipeline import Runtime, generate_video
from worker.settings import Settings


def _attached(tmp_path: Path, url: str, volume: Path) -> Runtime:
    # WORKER_DIR pointing at the attached ComfyUI's folders lets the worker clean up after jobs.
    env = {"COMFY_URL": url, "WORKER_DIR": str(tmp_path / "comfy"), "VOLUME_PATH": str(volume), "COMFY_BOOT_TIMEOUT": "3"}
    return Runtime.create(Settings.from_env(env))


def test_a_job_runs_on_an_attached_comfyui(tmp_path: Path, comfy_double, comfy_volume: Path) -> None:
    runtime = _attached(tmp_path, comfy_double.url, comfy_volume)
    runtime.server.start()
    job = {"prompt": "a kite", "image": png_b64(), "options": {"width": 64, "height": 48, "length": 9}}
    out = generate_video(job, "attached", runtime)
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["width"], video["height"], video["frames"]) == (64, 48, 9)
    assert runtime.server.pid is None  # nothing was launched
    assert files_in(comfy_double.output_dir) == [] and files_in(comfy_double.input_dir) == []
    seen = requests.get(f"{comfy_double.url}/__double__/state", timeout=5).json()
    assert len(seen["uploads"]) == 1 and len(seen["views"]) == 1  # its folders are not the worker's: over HTTP


def test_an_attached_comfyui_that_does_not_answer_is_a_clear_error(tmp_path: Path, comfy_volume: Path) -> None:
    runtime = _attached(tmp_path, f"http://127.0.0.1:{free_port()}", comfy_volume)
    with pytest.raises(ComfyBootError, match="COMFY_URL"):
        runtime.server.start()
    with pytest.raises(ComfyUnavailable, match="did not start it and cannot restart it"):
        generate_video({"prompt": "x", "image": png_b64()}, "down", runtime)
