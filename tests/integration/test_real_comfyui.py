"""Every task against the REAL ComfyUI v0.30.0 on the CPU, through ``python handler.py --rp_serve_api``.

Opt-in: set ``REAL_COMFY_DIR`` (a ComfyUI installed with comfy_bootstrap/install.sh),
``REAL_COMFY_PYTHON`` (its Python) and ``REAL_VOLUME`` (a volume holding the tiny random-weight
models of ../shared/tools/tiny-models/); docs/development.md says how to set them up. CI has no
ComfyUI: there the module is skipped with one line.

The jobs are tiny (64×64, 5 frames) and share one prompt text, so ComfyUI encodes it once (two
to three minutes on two cores) and serves it from its cache afterwards. Each test prints its timings.
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import requests
from PIL import Image

from tests.harness import WorkerAPI, decode_mp4, files_in, png_b64, running_worker
from tests.media_files import audio_file, video_file
from tests.test_custom_safety import ATTACKS

REAL = {name: os.environ.get(name, "") for name in ("REAL_COMFY_DIR", "REAL_COMFY_PYTHON", "REAL_VOLUME")}
pytestmark = pytest.mark.skipif(
    not all(REAL.values()),
    reason="the real ComfyUI is not configured (set REAL_COMFY_DIR, REAL_COMFY_PYTHON and REAL_VOLUME)",
)

PROMPT = "a red ball rolls across a wooden table"
SMALL = {"width": 64, "height": 64, "length": 5, "seed": 42}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerAPI]:
    tmp = tmp_path_factory.mktemp("real")
    overrides = {
        "ALLOW_CUSTOM_WORKFLOW": "true",
        "COMFY_DIR": REAL["REAL_COMFY_DIR"],
        "COMFY_PYTHON": REAL["REAL_COMFY_PYTHON"],
        "VOLUME_PATH": REAL["REAL_VOLUME"],
        "COMFY_EXTRA_ARGS": "--cpu",
        "COMFY_BOOT_TIMEOUT": "300",
        "COMFY_HTTP_TIMEOUT": "30",
        "JOB_TIMEOUT": "900",
    }
    started = time.monotonic()
    with running_worker(tmp, **overrides) as api:
        print(f"\nworker API answering after {time.monotonic() - started:.1f} s")
        yield api


def _run(worker: WorkerAPI, job: dict, label: str) -> dict:
    started = time.monotonic()
    body = worker.runsync({"prompt": PROMPT, **job} if "workflow" not in job else job, timeout=1200)
    seconds = time.monotonic() - started
    assert body["status"] == "COMPLETED", body.get("error")
    out = body["output"]
    timings = out["timings"]
    print(f"\n{label}: round trip {seconds:.2f} s, ComfyUI execution {timings['execution']:.2f} s, "
          f"worker overhead {timings['total'] - timings['execution']:.3f} s")  # fmt: skip
    return out


def _frame(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


@pytest.mark.parametrize(
    ("label", "job", "rate"),
    [
        ("i2v", {"image": png_b64(96, 64)}, 24.0),
        ("flf2v", {"task": "flf2v", "image": png_b64(96, 64), "end_image": png_b64(96, 64, (30, 30, 220))}, 24.0),
        ("flf2v end only", {"end_image": png_b64(96, 64, (30, 30, 220))}, 24.0),
        ("t2v", {"task": "t2v", "options": {"frame_rate": 16}}, 16.0),
        ("ti2v-5b", {"task": "ti2v-5b", "image": png_b64(96, 64)}, 24.0),
        ("ti2v-5b text only", {"task": "ti2v-5b"}, 24.0),
    ],
)
def test_each_task_on_the_real_comfyui(worker: WorkerAPI, label: str, job: dict, rate: float) -> None:
    options = {**SMALL, **job.get("options", {})}
    out = _run(worker, {**job, "options": options, "return_last_frame": True}, label)
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["codec"], video["width"], video["height"], video["frames"], video["rate"]) == ("h264", 64, 64, 5, rate)
    last = _frame(out["last_frame"])
    assert last.size == (64, 64) and last.format == "PNG"
    work = Path(worker.env["WORKER_DIR"])
    assert files_in(work / "input") == [] and files_in(work / "output") == []


def test_a_chain_continues_from_the_last_frame(worker: WorkerAPI) -> None:
    first = _run(worker, {"image": png_b64(96, 64), "options": SMALL, "return_last_frame": True}, "chain, clip 1")
    second = _run(worker, {"image": first["last_frame"], "options": {**SMALL, "seed": 43}}, "chain, clip 2")
    assert decode_mp4(base64.b64decode(second["video"]))["frames"] == 5


def test_two_loras_on_the_two_experts_and_one_that_does_not_fit(worker: WorkerAPI) -> None:
    loras = [{"name": "style/example_style_high.safetensors", "strength": 0.7, "target": "high"},
             {"name": "style/example_style_low.safetensors", "strength": 0.7, "target": "low"}]  # fmt: skip
    out = _run(worker, {"image": png_b64(96, 64), "options": SMALL, "loras": loras}, "two LoRAs")
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert [lora["target"] for lora in out["loras"]] == ["high", "low"] and "warnings" not in out
    mismatch = _run(worker, {"image": png_b64(96, 64), "options": {**SMALL, "seed": 7},
                             "loras": [{"name": "style/mismatch.safetensors", "target": "high"}]}, "LoRA that does not fit")  # fmt: skip
    [warning] = mismatch["warnings"]
    assert warning.startswith("loras[0] ('style/mismatch.safetensors'): 21 of its 21 tensors did not fit the model")


@pytest.mark.parametrize(("model", "factor", "frames"), [("rife", 2, 9), ("film", 3, 13)])
def test_interpolation_multiplies_the_frames_with_comfyuis_own_nodes(worker: WorkerAPI, model: str, factor: int, frames: int) -> None:
    options = {**SMALL, "frame_rate": 16, "interpolate": factor, "interpolation_model": model}
    out = _run(worker, {"image": png_b64(96, 64), "options": options}, f"interpolate {factor} ({model})")
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["frames"], video["rate"]) == (frames, 16.0 * factor) and out["frames"] == frames
    assert out["interpolation_model"] == model


def test_easycache_skips_steps_of_a_20_step_run(worker: WorkerAPI) -> None:
    job = {"task": "ti2v-5b", "image": png_b64(96, 64), "options": {**SMALL, "cache": "easy"}}
    out = _run(worker, job, "ti2v-5b with EasyCache")
    cache = out["cache"]
    print(f"EasyCache: skipped {cache['skipped_steps']} of {cache['steps']} steps")
    assert cache["mode"] == "easy" and cache["steps"] == 20 and 0 < cache["skipped_steps"] < 20
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == SMALL["length"]


def test_a_custom_graph_runs_as_given(worker: WorkerAPI) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "load_image"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 64, "height": 64, "crop": "disabled"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 5}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 8.0}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "mine", "format": "auto", "codec": "auto"}},
    }
    out = _run(worker, {"workflow": graph, "image": png_b64(96, 64)}, "custom graph")
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["width"], video["frames"], video["rate"]) == (64, 5, 8.0) and out["task"] == "custom"


@pytest.mark.parametrize(("label", "job"), [("i2v 4step", {"image": png_b64(96, 64)}), ("t2v 4step", {"task": "t2v"})])
def test_the_4step_preset_runs_its_two_plus_two_steps(worker: WorkerAPI, label: str, job: dict) -> None:
    out = _run(worker, {**job, "speed": "4step", "options": SMALL}, label)
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert out["speed"] == "4step" and "warnings" not in out  # the 4-step LoRAs fit the experts


def test_a_custom_graph_writes_only_into_the_jobs_folder(worker: WorkerAPI) -> None:
    """A video kept in ComfyUI's temp folder (save_output false) and a SaveImage with a prefix that
    tries to leave: both land in the job's folder, and nothing is left after the job."""
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "load_image"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 64, "height": 64, "crop": "disabled"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 5}},
        "4": {"class_type": "VHS_VideoCombine", "inputs": {
            "images": ["3", 0], "frame_rate": 8, "loop_count": 0, "filename_prefix": "../../escape", "format": "video/h264-mp4",
            "pix_fmt": "yuv420p", "crf": 19, "save_metadata": True, "trim_to_audio": False, "pingpong": False, "save_output": False}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "/tmp/elsewhere"}},
    }  # fmt: skip
    out = _run(worker, {"workflow": graph, "image": png_b64(96, 64)}, "custom graph, temp video")
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    work = Path(worker.env["WORKER_DIR"])
    assert files_in(work / "input") == [] and files_in(work / "output") == [] and files_in(work / "temp") == []


def test_the_allow_list_refuses_each_attack_before_comfyui_sees_it(worker: WorkerAPI) -> None:
    base = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "load_image"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 64, "height": 64, "crop": "disabled"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }  # fmt: skip
    comfy = f"http://127.0.0.1:{worker.env['COMFY_PORT']}"
    before = len(requests.get(f"{comfy}/history", timeout=30).json())
    for class_type, inputs in ATTACKS.items():
        body = worker.runsync({"workflow": {**base, "50": {"class_type": class_type, "inputs": inputs}}, "image": png_b64(96, 64)})
        assert body["status"] == "FAILED" and body["error"].startswith(f'workflow_rejected: workflow: node 50 ("{class_type}")'), body
        print(f"\n{class_type}: {body['error'][:110]}…")
    assert len(requests.get(f"{comfy}/history", timeout=30).json()) == before


def test_a_video_with_music_on_the_real_comfyui(worker: WorkerAPI) -> None:
    out = _run(worker, {"image": png_b64(96, 64), "audio": base64.b64encode(audio_file("mp3", 3.0, 44_100, 2)).decode(),
                        "options": {**SMALL, "length": 9, "frame_rate": 8}}, "i2v with an MP3")  # fmt: skip
    video, track = _probe(base64.b64decode(out["video"]))
    assert video == (9, 8.0) and track[0] == "aac" and abs(track[1] - 9 / 8) <= 1 / 8
    assert out["audio"]["codec"] == "aac" and out["audio"]["sample_rate"] == 44_100


@pytest.mark.parametrize(("seconds", "segments"), [(1.0, 1), (6.0, 2)])
def test_s2v_on_the_real_comfyui(worker: WorkerAPI, seconds: float, segments: int) -> None:
    job = {"task": "s2v", "image": png_b64(96, 64), "audio": base64.b64encode(audio_file("wav", seconds, 16_000)).decode(),
           "options": {"width": 64, "height": 64, "steps": 2, "seed": 42}}  # fmt: skip
    out = _run(worker, job, f"s2v, {seconds:g} s of speech ({segments} segment{'s' if segments > 1 else ''})")
    video, track = _probe(base64.b64decode(out["video"]))
    frames = round(seconds * 16)
    assert video == (frames, 16.0) and out["length"] == frames and track[0] == "aac" and abs(track[1] - seconds) <= 1 / 16


def _probe(data: bytes) -> tuple[tuple[int, float], tuple[str, float]]:
    """(frames, rate) of the video and (codec, seconds) of its sound, decoded with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames, rate = sum(1 for _ in container.decode(stream)), float(stream.average_rate)
    with av.open(io.BytesIO(data)) as container:
        sound = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(sound))
        return (frames, rate), (sound.codec_context.name, samples / sound.codec_context.sample_rate)


@pytest.mark.parametrize("control", ["canny", "video"])
def test_control_on_the_real_comfyui(worker: WorkerAPI, control: str) -> None:
    clip = base64.b64encode(video_file("mp4", 1.0, 30, (96, 64), audio=True)).decode()
    out = _run(worker, {"task": "control", "video": clip, "image": png_b64(96, 64), "keep_audio": True,
                        "options": {**SMALL, "length": None, "steps": 2, "control": control}}, f"control {control}")  # fmt: skip
    video, track = _probe(base64.b64decode(out["video"]))
    assert video == (13, 16.0) and out["length"] == 13 and track[0] == "aac"  # 1 s at 16 fps: 16 frames → 13


def test_control_pose_on_the_real_comfyui(worker: WorkerAPI) -> None:
    """SDPose draws the pose of each of the 5 frames (about 10 s a frame on two cores), Fun-Control follows it."""
    clip = base64.b64encode(video_file("mp4", 5 / 16, 16, (96, 64))).decode()
    out = _run(worker, {"task": "control", "video": clip, "options": {**SMALL, "length": None, "steps": 2, "control": "pose"}}, "control pose")
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["frames"], video["rate"], out["control"]) == (5, 16.0, "pose")


@pytest.mark.parametrize("mode", ["move", "replace"])
def test_animate_draws_the_pose_and_face_from_the_video_on_the_real_comfyui(worker: WorkerAPI, mode: str) -> None:
    """No pose_video: the graph draws the pose and cuts the face of the 5 frames of ``video`` with SDPose."""
    clip = base64.b64encode(video_file("mp4", 5 / 16, 16, (96, 64), audio=True)).decode()
    mask = {"mask_video": clip} if mode == "replace" else {}
    out = _run(worker, {"task": "animate", "image": png_b64(96, 64), "video": clip, "keep_audio": True, **mask,
                        "options": {"width": 64, "height": 64, "steps": 2, "seed": 42, "mode": mode}}, f"animate {mode} from a video")  # fmt: skip
    video, track = _probe(base64.b64decode(out["video"]))
    assert video == (5, 16.0) and (out["mode"], out["control"], out["length"]) == (mode, "pose", 5) and track[0] == "aac"


def test_animate_replace_tracks_the_person_with_sam3_on_the_real_comfyui(worker: WorkerAPI) -> None:
    """From ``video`` alone: SDPose's pose and face, SAM 3.1's mask of the person (about 150 s a frame
    here, so 3 frames), and the scene."""
    clip = base64.b64encode(video_file("mp4", 3 / 16, 16, (96, 64))).decode()
    out = _run(worker, {"task": "animate", "image": png_b64(96, 64), "video": clip,
                        "options": {"width": 64, "height": 64, "steps": 2, "seed": 42, "mode": "replace"}}, "animate replace, SAM 3.1")  # fmt: skip
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["frames"], video["rate"], out["control"], out["mask"], out["length"]) == (3, 16.0, "pose", "sam3", 3)


@pytest.mark.parametrize("mode", ["move", "replace"])
def test_animate_on_the_real_comfyui(worker: WorkerAPI, mode: str) -> None:
    """Two segments, the second continuing from the first: 5.5 s of pose video at 16 fps is 88 frames,
    77 + 11 (worker/tasks/animate.py)."""
    drive = base64.b64encode(video_file("mp4", 5.5, 16, (96, 64), audio=True)).decode()
    scene = {"video": drive, "mask_video": drive} if mode == "replace" else {}
    out = _run(worker, {"task": "animate", "image": png_b64(96, 64), "pose_video": drive, "face_video": drive, "keep_audio": True,
                        **scene, "options": {"width": 64, "height": 64, "steps": 2, "seed": 42, "mode": mode}},  # fmt: skip
               f"animate {mode}")
    video, track = _probe(base64.b64decode(out["video"]))
    assert video == (88, 16.0) and out["length"] == 88 and out["mode"] == mode and track[0] == "aac"
