"""The whole job pipeline with the ComfyUI double launched as the worker's child process.

These tests exercise boot, liveness and restart for real: the double is started by
``ComfyServer`` exactly as ComfyUI would be, and faults make it crash, freeze or misbehave.
"""

from __future__ import annotations

import base64
import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from comfy_bootstrap.errors import ComfyUnavailable, ExecutionInterrupted, ExecutionTimeout, ModelsMissing, OutputMissing
from tests.file_server import FileServer
from tests.harness import decode_mp4, files_in, png_b64, set_faults
from tests.media_files import audio_file
from worker.errors import InvalidInput, ModelsInvalid, OutputTooLarge, StorageFull
from worker.health import WorkerHealth
from worker.outputs import LocalFiles
from worker.pipeline import Runtime, generate_video

SMALL = {"width": 64, "height": 64, "length": 5, "seed": 5}


def _job(**options) -> dict:
    return {"prompt": "a red ball bounces", "image": png_b64(), "options": {**SMALL, **options}}


def _assert_clean(runtime: Runtime) -> None:
    assert files_in(runtime.settings.comfy.input_dir) == []
    assert files_in(runtime.settings.comfy.output_dir) == []


def test_default_job_returns_the_requested_video_and_leaves_no_files(make_runtime) -> None:
    runtime = make_runtime()
    progress: list[dict] = []
    job = {"prompt": "the sun sets", "image": png_b64(300, 200, (10, 200, 30)), "options": {"seed": 11}}
    out = generate_video(job, "job-1", runtime, send_progress=progress.append)
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["codec"], video["width"], video["height"], video["frames"], video["rate"]) == ("h264", 832, 832, 81, 24.0)
    assert video["pix_fmt"] == "yuv420p"
    assert video["first_mean"][1] > 150 and video["first_mean"][0] < 60  # the green input image
    assert "prompt" not in video["metadata"]  # the workflow (with the prompt) is not embedded
    assert out["filename"].endswith(".mp4") and out["files_count"] == 1 and out["seed"] == 11
    assert (out["width"], out["height"], out["length"], out["frame_rate"]) == (832, 832, 81, 24.0)
    timings = out["timings"]
    assert set(timings) == {"prepare", "boot_wait", "upload", "comfyui", "queue_wait", "execution", "loading", "first_step",
                            "output", "total"}  # fmt: skip
    assert timings["loading"] <= timings["execution"] <= timings["comfyui"]
    assert timings["prepare"] + timings["upload"] + timings["loading"] < timings["first_step"] < timings["total"]
    stages = [p["stage"] for p in progress]
    assert stages[0] == "loading" and stages.index("high_noise") < stages.index("low_noise") < stages.index("decode")
    assert stages[-1] == "encode" and all(p["elapsed"] <= out["timings"]["total"] for p in progress)
    _assert_clean(runtime)


def test_the_launched_comfyuis_folders_are_the_workers_so_media_and_video_pass_without_requests(make_runtime) -> None:
    runtime = make_runtime()
    out = generate_video({"prompt": "x", "image": png_b64(), "options": {**SMALL, "seed": 5}, "return_last_frame": True}, "local", runtime)
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5 and base64.b64decode(out["last_frame"]).startswith(b"\x89PNG")
    seen = requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()
    assert seen["uploads"] == [] and seen["views"] == []  # written into its input folder, read from its output folder
    _assert_clean(runtime)


def test_local_files_are_read_only_inside_their_folder(tmp_path: Path) -> None:
    output = tmp_path / "output"
    (output / "job").mkdir(parents=True)
    (output / "job" / "a.mp4").write_bytes(b"video")
    (tmp_path / "secret.txt").write_text("no")
    files = LocalFiles({"output": output})
    assert files.view("a.mp4", subfolder="job") == b"video"
    assert files.view("missing.mp4") is None and files.view("a.mp4", folder_type="temp") is None
    assert files.view("../secret.txt") is None and files.view("secret.txt", subfolder="..") is None
    assert files.view("", subfolder="job") is None


def test_an_input_that_cannot_be_written_is_a_clear_error(make_runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = make_runtime()

    write_bytes = Path.write_bytes

    def full(self: Path, data: bytes) -> int:  # the disk fills up half-way through the file
        write_bytes(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageFull, match=r"cannot write the job's image into ComfyUI's input folder .*: No space left on device"):
        generate_video(_job(), "full", runtime)
    monkeypatch.undo()
    _assert_clean(runtime)  # the half-written upload is gone
    out = generate_video(_job(), "after", runtime)  # and the next job is fine
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] > 0
    _assert_clean(runtime)


def test_invalid_input_never_reaches_comfyui(make_runtime) -> None:
    runtime = make_runtime()
    with pytest.raises(InvalidInput, match=r"options.width: 70 is not a multiple of 16"):
        generate_video(_job(width=70), "bad", runtime)
    assert runtime.client.is_answering()
    assert requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()["prompts"] == []


def test_a_crash_answer_quotes_only_the_lines_that_explain_it(make_runtime) -> None:
    """ComfyUI's log holds every job's lines; the answer to one job must not carry another's."""
    runtime = make_runtime()
    with open(runtime.settings.comfy.log_file, "a") as log:  # what ComfyUI and its nodes printed earlier
        log.write("[INFO] job A's prompt: a secret garden at dawn\n")
        log.write("[WARNING] fetching https://cdn.example.com/lora.safetensors?token=SECRETTOKEN\n")
        log.write("[INFO] image " + "QUJD" * 200 + "\n")
    set_faults(runtime.settings, {"mode": "crash", "node_type": "LoadImage"})  # early: these lines are among the last 15
    with pytest.raises(ComfyUnavailable) as err:
        generate_video(_job(), "crash", runtime)
    message = str(err.value)
    assert "secret garden" not in message and "SECRETTOKEN" not in message and "QUJDQUJD" not in message
    assert "exit code 1" in message and "crash fault: exiting with status 1" in message
    assert "[WARNING] fetching https://cdn.example.com/lora.safetensors?…" in message


def test_comfyui_crash_mid_job_is_reported_and_the_next_job_works(make_runtime) -> None:
    runtime = make_runtime()
    set_faults(runtime.settings, {"mode": "crash"})
    started = time.monotonic()
    with pytest.raises(ComfyUnavailable) as err:
        generate_video(_job(), "crash", runtime)
    assert time.monotonic() - started < 20
    assert "exit code 1" in str(err.value) and "comfyui.log" in str(err.value)
    out = generate_video(_job(seed=6), "after-crash", runtime)
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert runtime.server.restarts == 1
    _assert_clean(runtime)


def test_comfyui_killed_by_the_oom_killer_twice_asks_for_a_new_worker(make_runtime, monkeypatch) -> None:
    runtime = make_runtime()
    kills = iter(range(1, 100))  # the container's OOM-kill counter rises with every kill
    monkeypatch.setattr("comfy_bootstrap.crash.read_oom_kills", lambda: next(kills))
    health = WorkerHealth(on_runpod=True)
    verdicts = []
    for seed in (1, 2):
        runtime.server.ensure_alive()  # restarted after the first kill
        set_faults(runtime.settings, {"mode": "step_delay", "seconds": 0.3})
        killer = threading.Thread(target=_kill_when_sampling, args=(runtime,))
        killer.start()
        with pytest.raises(ComfyUnavailable) as err:
            generate_video(_job(seed=seed), f"oom-{seed}", runtime)
        killer.join()
        assert err.value.host_oom
        assert "SIGKILL from the kernel's out-of-memory killer: the host's RAM ran out (not the GPU's memory)" in str(err.value)
        verdicts.append(health.after_failure(err.value))
    assert not verdicts[0].refresh_worker and verdicts[0].note.startswith("Out of the host's memory: try fewer frames")
    assert (
        verdicts[1].refresh_worker
        and "ran out of the host's memory on 2 jobs in a row: RunPod replaces this worker" in verdicts[1].note
    )
    assert generate_video(_job(seed=3), "after-oom", runtime)["length"] == 5  # restarted for the next job


def _kill_when_sampling(runtime: Runtime) -> None:
    """SIGKILL ComfyUI (as the kernel's OOM killer would) once the job's prompt runs."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=2).json()
        if state.get("running_prompt_id"):
            os.kill(runtime.server.pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def test_frozen_comfyui_times_out_then_is_restarted_for_the_next_job(make_runtime, monkeypatch) -> None:
    monkeypatch.setattr("comfy_bootstrap.execution.INTERRUPT_GRACE", 1.0)
    runtime = make_runtime(JOB_TIMEOUT="2", COMFY_HTTP_TIMEOUT="1")
    set_faults(runtime.settings, {"mode": "freeze"})
    with pytest.raises(ExecutionTimeout) as err:
        generate_video(_job(), "frozen", runtime)
    assert err.value.unresponsive and runtime.server.restarts == 1
    out = generate_video(_job(seed=7), "after-freeze", runtime)
    assert out["length"] == 5


def test_cancel_during_sampling_interrupts_and_the_next_job_works(make_runtime) -> None:
    runtime = make_runtime()
    set_faults(runtime.settings, {"mode": "step_delay", "seconds": 0.5})
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    with pytest.raises(ExecutionInterrupted, match="cancelled"):
        generate_video(_job(), "cancel", runtime, stop=stop)
    assert generate_video(_job(seed=8), "after-cancel", runtime)["frame_rate"] == 24.0
    _assert_clean(runtime)


def test_missing_model_names_the_file_and_folders_then_recovers(make_runtime) -> None:
    runtime = make_runtime()
    lora = Path(runtime.settings.comfy.volume_path) / "models" / "loras" / runtime.settings.model_names["MODEL_LORA"]
    saved = lora.read_bytes()
    lora.unlink()
    with pytest.raises(ModelsMissing) as err:
        generate_video(_job(), "no-lora", runtime)
    assert runtime.settings.model_names["MODEL_LORA"] in str(err.value) and "models/loras" in str(err.value)
    lora.write_bytes(saved)
    assert generate_video(_job(seed=9), "lora-back", runtime)["files_count"] == 1


def test_model_files_are_listed_once_per_comfyui_and_a_file_gone_since_is_named_missing(make_runtime) -> None:
    runtime = make_runtime()
    asked: list[str] = []
    list_models = runtime.client.list_models
    runtime.client.list_models = lambda folder: asked.append(folder) or list_models(folder)  # type: ignore[method-assign]
    generate_video(_job(), "first", runtime)
    first = len(asked)
    generate_video(_job(seed=2), "second", runtime)
    assert first >= 3 and len(asked) == first  # the second job asked ComfyUI nothing
    lora = Path(runtime.settings.comfy.volume_path) / "models" / "loras" / runtime.settings.model_names["MODEL_LORA"]
    saved = lora.read_bytes()
    lora.unlink()
    with pytest.raises(ModelsMissing, match=runtime.settings.model_names["MODEL_LORA"]):
        generate_video(_job(seed=3), "gone", runtime)
    lora.write_bytes(saved)
    runtime.server.restart("a new ComfyUI lists its files anew")
    generate_video(_job(seed=4), "restarted", runtime)
    assert len(asked) > first + 3


def test_truncated_model_file_is_models_invalid_naming_it_then_the_fixed_file_works(make_runtime) -> None:
    runtime = make_runtime()
    settings = runtime.settings
    expert = Path(settings.comfy.volume_path) / "models" / "diffusion_models" / settings.model_names["MODEL_LOW_NOISE"]
    saved = expert.read_bytes()
    expert.write_bytes(saved[:-16])  # an interrupted download
    with pytest.raises(ModelsInvalid) as err:
        generate_video(_job(), "cut-short", runtime)
    message = str(err.value)
    assert err.value.code == "models_invalid" and message.startswith("task i2v: 1 model file on the volume cannot be used")
    assert f"'{settings.model_names['MODEL_LOW_NOISE']}' (MODEL_LOW_NOISE) at {expert}" in message
    assert "16 bytes missing — the download was cut short" in message
    assert f"python scripts/models.py --task i2v --volume {settings.comfy.volume_path}" in message
    assert requests.get(f"{settings.comfy.base_url}/__double__/state", timeout=5).json()["prompts"] == []
    _assert_clean(runtime)
    expert.write_bytes(saved)
    assert generate_video(_job(seed=12), "fixed", runtime)["files_count"] == 1


def test_reported_file_that_does_not_exist_is_output_missing_and_the_next_job_works(make_runtime) -> None:
    runtime = make_runtime()
    set_faults(runtime.settings, {"mode": "missing_output"})
    with pytest.raises(OutputMissing, match="cannot serve it"):
        generate_video(_job(), "ghost", runtime)
    _assert_clean(runtime)
    assert generate_video(_job(seed=10), "after-ghost", runtime)["files_count"] == 1


def test_websocket_dropped_mid_run_still_completes_and_the_next_job_works(make_runtime) -> None:
    runtime = make_runtime()
    set_faults(runtime.settings, {"mode": "ws_drop"})
    out = generate_video(_job(), "ws-drop", runtime)
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert generate_video(_job(seed=11), "after-drop", runtime)["files_count"] == 1
    _assert_clean(runtime)


def test_video_over_the_payload_limit_is_refused_and_cleaned_up(make_runtime) -> None:
    runtime = make_runtime(MAX_RESPONSE_BYTES="5000")
    with pytest.raises(OutputTooLarge, match="MAX_RESPONSE_BYTES"):
        generate_video(_job(), "big", runtime)
    _assert_clean(runtime)


def test_keep_files_and_save_metadata_when_configured(make_runtime) -> None:
    runtime = make_runtime(KEEP_FILES="true", SAVE_METADATA="true")
    out = generate_video(_job(), "keep", runtime)
    assert "prompt" in decode_mp4(base64.b64decode(out["video"]))["metadata"]
    assert out["filename"] in files_in(runtime.settings.comfy.output_dir)
    assert len(files_in(runtime.settings.comfy.input_dir)) == 1


# --- JOB_TIMEOUT counts from the handler's first line, through every stage ---------------------------


def test_a_slow_audio_download_ends_with_the_jobs_time_budget(make_runtime) -> None:
    runtime = make_runtime(JOB_TIMEOUT="2", ALLOW_PRIVATE_IMAGE_URLS="1")
    with FileServer({"/speech.wav": audio_file("wav", 3.0)}, pace=0.05) as server:  # ~2.4 s for 96 KiB
        begun = time.monotonic()
        with pytest.raises(ExecutionTimeout) as err:
            generate_video({**_job(), "audio_url": f"{server.url}/speech.wav"}, "slow-audio", runtime, started=begun)
    assert "audio_url" in str(err.value) and "JOB_TIMEOUT" in str(err.value)
    assert time.monotonic() - begun < 3.5
    assert generate_video(_job(seed=9), "after-slow-audio", runtime)["length"] == 5
    _assert_clean(runtime)


def test_time_spent_before_the_pipeline_counts_against_job_timeout(make_runtime) -> None:
    runtime = make_runtime(JOB_TIMEOUT="5")
    with pytest.raises(ExecutionTimeout, match=r"time budget of 5 s \(JOB_TIMEOUT\) while preparing image"):
        generate_video(_job(), "late", runtime, started=time.monotonic() - 6)
    _assert_clean(runtime)


def test_cancel_during_a_download_ends_the_job_at_once(make_runtime) -> None:
    runtime = make_runtime(ALLOW_PRIVATE_IMAGE_URLS="1")
    stop = threading.Event()
    with FileServer({"/speech.wav": audio_file("wav", 3.0)}, pace=0.05) as server:
        threading.Timer(0.5, stop.set).start()
        begun = time.monotonic()
        with pytest.raises(ExecutionInterrupted, match="audio_url: .*cancelled during the download"):
            generate_video({**_job(), "audio_url": f"{server.url}/speech.wav"}, "cancel-fetch", runtime, stop=stop)
    assert time.monotonic() - begun < 1.5
