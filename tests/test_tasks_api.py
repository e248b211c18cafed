"""Every task as a user runs it: ``python handler.py --rp_serve_api``, real HTTP, the MP4 and the last frame decoded.

The worker launches the ComfyUI double (which replays the recorded graphs of each task) as its
ComfyUI. Each job asks for its last frame; a chain sends one job's last frame as the next job's
image, as docs/api.md shows.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import WorkerAPI, decode_mp4, files_in, png_b64, running_worker

RED, BLUE = (220, 30, 30), (30, 30, 220)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerAPI]:
    with running_worker(tmp_path_factory.mktemp("tasks")) as api:
        yield api


def _run(worker: WorkerAPI, job: dict) -> dict:
    body = worker.runsync(job)
    assert body["status"] == "COMPLETED", body.get("error")
    return body["output"]


def _png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def _mean(image: Image.Image) -> tuple[int, ...]:
    pixels = list(image.convert("RGB").getdata())
    return tuple(sum(p[i] for p in pixels) // len(pixels) for i in range(3))


def _close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("job", "size", "frames", "rate"),
    [
        ({"image": png_b64(color=RED)}, (64, 48), 9, 24.0),
        ({"task": "flf2v", "image": png_b64(color=RED), "end_image": png_b64(color=BLUE)}, (64, 48), 9, 24.0),
        ({"end_image": png_b64(color=BLUE)}, (64, 48), 9, 24.0),
        ({"task": "t2v", "options": {"frame_rate": 16}}, (64, 48), 9, 16.0),
        ({"task": "ti2v-5b", "image": png_b64(color=RED)}, (64, 64), 9, 24.0),
        ({"task": "ti2v-5b"}, (64, 64), 9, 24.0),
    ],
    ids=["i2v", "flf2v", "flf2v-end-only", "t2v", "ti2v-5b", "ti2v-5b-text"],
)
def test_each_task_makes_its_video_and_returns_the_last_frame(worker: WorkerAPI, job: dict, size: tuple, frames: int, rate: float) -> None:
    options = {"width": size[0], "height": size[1], "length": frames, **job.get("options", {})}
    out = _run(worker, {"prompt": "a ball rolls", **job, "options": options, "return_last_frame": True})
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["width"], video["height"], video["frames"], video["rate"]) == (*size, frames, rate)
    assert out["task"] == job.get("task", "flf2v" if "end_image" in job else "i2v")
    last = _png(out["last_frame"])
    assert last.size == size and last.format == "PNG"
    assert _close(_mean(last), video["last_mean"])
    if "end_image" in job:
        assert _close(video["last_mean"], BLUE)  # the video ends on the end image
    if job.get("image") and job.get("task") != "ti2v-5b":
        assert _close(video["first_mean"], RED)
    comfy = Path(worker.env["WORKER_DIR"])
    assert files_in(comfy / "input") == [] and files_in(comfy / "output") == []  # last frame deleted too


def test_a_last_frame_sent_back_as_the_image_continues_the_clip(worker: WorkerAPI) -> None:
    first = _run(worker, {"prompt": "a ball rolls", "image": png_b64(color=RED),
                          "options": {"width": 64, "height": 48, "length": 9}, "return_last_frame": True})  # fmt: skip
    second = _run(worker, {"prompt": "a ball rolls on", "image": first["last_frame"],
                           "options": {"width": 64, "height": 48, "length": 9}})  # fmt: skip
    one, two = (decode_mp4(base64.b64decode(out["video"])) for out in (first, second))
    assert _close(two["first_mean"], one["last_mean"], tolerance=6)


def test_without_return_last_frame_the_answer_is_as_before(worker: WorkerAPI) -> None:
    out = _run(worker, {"prompt": "a ball rolls", "image": png_b64(), "options": {"width": 64, "height": 48, "length": 5}})
    assert "last_frame" not in out and "last_frame_url" not in out
    assert set(out) == {"video", "filename", "prompt_id", "files_count", "task", "seed", "width", "height", "length",
                        "frame_rate", "content_type", "timings", "launch"}  # fmt: skip
    assert out["content_type"] == "video/mp4"
    assert out["launch"] == {"attention": "pytorch", "fast": [], "torch_compile": False}


def test_a_preset_size_and_duration_reach_the_video(worker: WorkerAPI) -> None:
    out = _run(worker, {"prompt": "waves", "image": png_b64(120, 60), "options": {"resolution": "480p", "duration": 0.5, "fps": 16}})
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["width"], video["height"], video["frames"]) == (960, 480, 9)  # 2:1 image, 480p, 0.5 s at 16 fps
    assert (out["width"], out["height"], out["length"]) == (960, 480, 9)


def test_a_task_whose_files_are_missing_fails_alone(tmp_path: Path) -> None:
    with running_worker(tmp_path) as api:
        (Path(api.env["VOLUME_PATH"]) / "models" / "diffusion_models" / "wan2.2_ti2v_5B_fp16.safetensors").unlink()
        body = api.runsync({"prompt": "x", "task": "ti2v-5b", "options": {"width": 64, "height": 64, "length": 5}})
        assert body["status"] == "FAILED"
        assert body["error"].startswith("models_missing: task ti2v-5b: 1 model file not found by ComfyUI")
        assert "'wan2.2_ti2v_5B_fp16.safetensors' (MODEL_TI2V_5B)" in body["error"]
        assert _run(api, {"prompt": "x", "task": "t2v", "options": {"width": 64, "height": 64, "length": 5}})["task"] == "t2v"


def test_the_4step_preset_through_the_local_api_and_its_missing_lora_named(tmp_path: Path) -> None:
    with running_worker(tmp_path) as api:
        options = {"width": 64, "height": 48, "length": 9}
        out = _run(api, {"prompt": "a ball rolls", "image": png_b64(color=RED), "speed": "4step", "options": options})
        video = decode_mp4(base64.b64decode(out["video"]))
        assert (video["width"], video["height"], video["frames"]) == (64, 48, 9) and _close(video["first_mean"], RED)
        assert (out["speed"], out["task"]) == ("4step", "i2v")
        (Path(api.env["VOLUME_PATH"]) / "models" / "loras" / "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors").unlink()
        body = api.runsync({"prompt": "x", "end_image": png_b64(), "speed": "4step", "options": options})
        assert body["status"] == "FAILED"
        assert body["error"].startswith("models_missing: task flf2v, speed 4step: 1 model file not found by ComfyUI")
        assert "'wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors' (MODEL_LORA_4STEP_HIGH_NOISE)" in body["error"]
        assert "speed" not in _run(api, {"prompt": "x", "end_image": png_b64(), "options": options})  # the default still works


def test_torch_compile_warms_up_compiled_before_the_first_job_and_the_answer_says_so(tmp_path: Path) -> None:
    with running_worker(tmp_path, TORCH_COMPILE="true", COMFY_FAST="fp16_accumulation") as api:
        out = _run(api, {"prompt": "x", "task": "t2v", "options": {"width": 64, "height": 48, "length": 5}})
        assert out["launch"] == {"attention": "pytorch", "fast": ["fp16_accumulation"], "torch_compile": True}
        assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert "the models are loaded and compiled (TORCH_COMPILE) at the warm-up's size" in (tmp_path / "worker.log").read_text()


def test_a_task_the_deployment_does_not_serve_is_refused(tmp_path: Path) -> None:
    with running_worker(tmp_path, TASKS="i2v,ti2v-5b") as api:
        body = api.runsync({"prompt": "x", "task": "t2v"})
        assert body["error"] == 'invalid_input: task: "t2v" is not served by this worker (TASKS) (allowed: i2v, ti2v-5b)'
        assert _run(api, {"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5}})["task"] == "i2v"


def test_loras_by_name_through_the_local_api_with_a_warning_for_one_that_does_not_fit(worker: WorkerAPI) -> None:
    from tests.comfy_double.inprocess import safetensors_stand_in

    volume = Path(worker.env["VOLUME_PATH"]) / "models" / "loras"
    (volume / "style").mkdir(parents=True, exist_ok=True)
    (volume / "style" / "film.safetensors").write_bytes(safetensors_stand_in("loras/style/film.safetensors"))
    other = [("lora_unet_mid_block.lora_down.weight", (1, 4)), ("lora_unet_mid_block.lora_up.weight", (4, 1))]
    (volume / "sd15.safetensors").write_bytes(safetensors_stand_in("loras/sd15.safetensors", other))
    loras = [{"name": "style/film.safetensors", "strength": 0.6, "target": "high"}, {"name": "sd15.safetensors"}]
    out = _run(worker, {"prompt": "a ball rolls", "task": "t2v", "loras": loras, "options": {"width": 64, "height": 64, "length": 5}})
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert out["loras"] == [{"name": "style/film.safetensors", "strength": 0.6, "target": "high"},
                            {"name": "sd15.safetensors", "strength": 1.0, "target": "both"}]  # fmt: skip
    assert len(out["warnings"]) == 1 and out["warnings"][0].startswith("loras[1] ('sd15.safetensors'): 2 of its 2 tensors")


@pytest.mark.parametrize("model", ["rife", "film"])
def test_interpolation_with_either_model_through_the_local_api(worker: WorkerAPI, model: str) -> None:
    """ComfyUI's own FrameInterpolate: 5 frames × 3 → 13 at three times the rate, the sources kept."""
    job = {"prompt": "a ball rolls", "image": png_b64(color=RED), "return_last_frame": True,
           "options": {"width": 64, "height": 48, "length": 5, "frame_rate": 16, "interpolate": 3, "interpolation_model": model}}  # fmt: skip
    out = _run(worker, job)
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["frames"], video["rate"]) == (13, 48.0) and _close(video["first_mean"], RED)
    assert (out["length"], out["frames"], out["interpolate"], out["interpolation_model"]) == (5, 13, 3, model)
    assert _close(_mean(_png(out["last_frame"])), video["last_mean"])


def test_an_interpolation_model_missing_on_the_volume_fails_only_its_jobs(tmp_path: Path) -> None:
    with running_worker(tmp_path) as api:
        (Path(api.env["VOLUME_PATH"]) / "models" / "frame_interpolation" / "rife_v4.26.safetensors").unlink()
        options = {"width": 64, "height": 48, "length": 5, "frame_rate": 16}
        body = api.runsync({"prompt": "x", "image": png_b64(), "options": {**options, "interpolate": 2}})
        assert body["status"] == "FAILED"
        assert body["error"].startswith("models_missing: task i2v, interpolation_model rife: 1 model file not found by ComfyUI")
        assert "'rife_v4.26.safetensors' (MODEL_INTERPOLATION_RIFE)" in body["error"]
        assert _run(api, {"prompt": "x", "image": png_b64(), "options": {**options, "interpolate": 2, "interpolation_model": "film"}})["frames"] == 9
        assert "frames" not in _run(api, {"prompt": "x", "image": png_b64(), "options": options})


@pytest.mark.parametrize(
    ("job", "cache"),
    [({"task": "ti2v-5b"}, {"mode": "easy", "skipped_steps": 12, "steps": 20}),  # the recorded 12/20
     ({"task": "t2v", "options": {"steps": 20}}, {"mode": "easy", "skipped_steps": 10, "steps": 20})],  # the double's 4/10 + 6/10
)  # fmt: skip
def test_easycache_skips_steps_and_the_answer_says_how_many(worker: WorkerAPI, job: dict, cache: dict) -> None:
    options = {"width": 64, "height": 64, "length": 5, "cache": "easy", **job.get("options", {})}
    out = _run(worker, {"prompt": "a lighthouse", **job, "options": options})
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert out["cache"] == cache and "warnings" not in out


def test_easycache_on_a_distilled_run_is_refused_before_comfyui_sees_it(worker: WorkerAPI) -> None:
    body = worker.runsync({"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 48, "length": 5, "cache": "easy"}})
    assert body["status"] == "FAILED"
    assert body["error"].startswith('invalid_input: options.cache: "easy" cannot help a run of 6 steps')
