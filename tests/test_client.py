"""scripts/client.py: its pure parts, then the whole program against the real worker.

The worker runs as in production (``python handler.py``, the SDK's job loop) against the stand-in
platform of tests/runpod_platform.py and launches the ComfyUI double, so progress, cancel and
errors travel the same way as on RunPod. ``--url`` mode runs against the SDK's local API.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import (
    REPO,
    decode_mp4,
    free_port,
    load_script,
    png_b64,
    process_env,
    start_worker_api,
    stop_worker_api,
    wait_http,
)
from tests.runpod_platform import FakeRunPod

CLIENT = REPO / "scripts" / "client.py"
client = load_script("wan22_client", CLIENT)

#: The order of a job's stages: worker/progress.py's, and those the client has labels for.
STAGE_ORDER = ["queued", "loading", "high_noise", "low_noise", "sampling", "decode", "interpolate", "encode"]
SMALL = ["--width", "64", "--height", "48", "--length", "5"]
BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{200,}")


# ---- pure parts ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "lora"),
    [
        ("detail.safetensors", {"name": "detail.safetensors"}),
        ("wan/detail.safetensors:0.8", {"name": "wan/detail.safetensors", "strength": 0.8}),
        ("detail:1:high_noise", {"name": "detail", "strength": 1.0, "target": "high_noise"}),
        ("detail:-0.5:low", {"name": "detail", "strength": -0.5, "target": "low"}),
        ("https://host/x.safetensors", {"url": "https://host/x.safetensors"}),
        ("https://host:8443/x.safetensors:0.7", {"url": "https://host:8443/x.safetensors", "strength": 0.7}),
        ("http://host/a?sig=1:2:both", {"url": "http://host/a?sig=1", "strength": 2.0, "target": "both"}),
        ("odd:name", {"name": "odd:name"}),
    ],
)
def test_lora_specs(spec: str, lora: dict) -> None:
    assert client.parse_lora(spec) == lora


@pytest.mark.parametrize("spec", ["", ":0.5", ":1:high"])
def test_lora_specs_without_a_name_are_refused(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        client.parse_lora(spec)


def test_lora_flag_error_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        client.parse_args(["--url", "http://x", "--lora", ":1"])
    assert exit_.value.code == 2 and "NAME_OR_URL[:STRENGTH[:TARGET]]" in capsys.readouterr().err


def _request(*argv: str) -> dict:
    return client.build_request(client.parse_args(["--endpoint", "ep", *argv]))


def test_request_carries_only_the_fields_given(tmp_path: Path) -> None:
    image = tmp_path / "start.png"
    image.write_bytes(b"\x89PNG fake")
    body = _request("--prompt", "a cat", "--image", str(image), "--task", "flf2v", "--end-image-url", "https://x/end.png",
                    "--lora", "a:0.5", "--lora", "https://x/b.safetensors", "--width", "832", "--cfg", "1",
                    "--frame-rate", "16", "--seed", "7", "--aspect-ratio", "16:9", "--duration", "3.5",
                    "--resolution", "480p", "--last-frame", str(tmp_path / "last.png"))  # fmt: skip
    assert body == {
        "input": {
            "prompt": "a cat",
            "image": base64.b64encode(b"\x89PNG fake").decode(),
            "task": "flf2v",
            "end_image_url": "https://x/end.png",
            "loras": [{"name": "a", "strength": 0.5}, {"url": "https://x/b.safetensors"}],
            "options": {"width": 832, "cfg": 1.0, "frame_rate": 16.0, "seed": 7, "aspect_ratio": "16:9", "duration": 3.5,
                        "resolution": "480p"},
            "return_last_frame": True,
        }
    }  # fmt: skip
    assert _request("--prompt", "x", "--image-url", "https://x/a.png") == {
        "input": {"prompt": "x", "image_url": "https://x/a.png"}
    }
    assert _request("--prompt", "x", "--task", "t2v", "--speed", "4step", "--interpolate", "2", "--output-frame-rate", "30",
                    "--video-format", "webm", "--crf", "30") == {
        "input": {"prompt": "x", "task": "t2v", "speed": "4step",
                  "options": {"interpolate": 2, "output_frame_rate": 30.0, "video_format": "webm", "crf": 30}}
    }  # fmt: skip


def test_a_video_job_with_its_part_its_sound_and_its_control(tmp_path: Path) -> None:
    clip = tmp_path / "dance.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    body = _request("--prompt", "a robot dances", "--video", str(clip), "--video-start", "2", "--video-end", "7", "--keep-audio",
                    "--control", "canny", "--resolution", "480p")  # fmt: skip
    assert body == {"input": {
        "prompt": "a robot dances", "keep_audio": True, "video_start": 2.0, "video_end": 7.0,
        "video": base64.b64encode(b"\x00\x00\x00\x18ftypmp42").decode(), "options": {"resolution": "480p", "control": "canny"},
    }}  # fmt: skip
    assert "keep_audio" not in _request("--prompt", "x", "--video-url", "https://x/a.mp4")["input"]


def test_request_refuses_nothing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(client.UsageError, match="nothing to send"):
        _request()
    with pytest.raises(client.UsageError, match="--image .*missing.png"):
        _request("--prompt", "x", "--image", str(tmp_path / "missing.png"))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(client.UsageError, match="empty"):
        _request("--prompt", "x", "--end-image", str(tmp_path / "empty.png"))


def test_input_json_is_sent_as_is(tmp_path: Path) -> None:
    whole = tmp_path / "whole.json"
    whole.write_text('{"input": {"prompt": "x", "options": {"fps": 8}}, "policy": {"executionTimeout": 60000}}')
    assert _request("--input-json", str(whole)) == {
        "input": {"prompt": "x", "options": {"fps": 8}},
        "policy": {"executionTimeout": 60000},
    }
    bare = tmp_path / "bare.json"
    bare.write_text('{"prompt": "y"}')
    assert _request("--input-json", str(bare), "--last-frame", "l.png") == {"input": {"prompt": "y", "return_last_frame": True}}
    with pytest.raises(client.UsageError, match="drop --prompt, --seed"):
        _request("--input-json", str(bare), "--prompt", "z", "--seed", "1")
    bare.write_text("[1, 2]")
    with pytest.raises(client.UsageError, match="job input object"):
        _request("--input-json", str(bare))


@pytest.mark.parametrize(
    ("update", "status", "text"),
    [
        ({"stage": "high_noise", "step": 3, "steps": 6, "percent": 45.0}, "IN_PROGRESS", "sampling, high noise, step 3/6, 45%, 12 s elapsed"),
        ({"stage": "low_noise", "step": 4, "steps": 6, "percent": 60, "elapsed": 75.2, "eta": 30.4},
         "IN_PROGRESS", "sampling, low noise, step 4/6, 60%, 1 min 15 s elapsed, ETA 30 s"),
        ({"stage": "encode"}, "IN_PROGRESS", "encoding, 12 s elapsed"),
        ({"stage": "sampling", "segment": 2, "segments": 3, "step": 5, "steps": 9, "percent": 51.7},
         "IN_PROGRESS", "sampling, segment 2/3, step 5/9, 52%, 12 s elapsed"),
        ({"stage": "loading", "eta": None, "elapsed": 3.25}, "IN_PROGRESS", "loading models, 3.2 s elapsed"),
        ({"stage": "upscale", "step": 2}, "IN_PROGRESS", "upscale, step 2, 12 s elapsed"),
        ({"stage": 5, "step": "x", "steps": True, "percent": float("nan"), "eta": -1}, "IN_PROGRESS", "5, 12 s elapsed"),
        ({"percent": 250}, "IN_PROGRESS", "running, 100%, 12 s elapsed"),
        ("warming up\n\x1b[31m", "IN_PROGRESS", "warming up [31m, 12 s elapsed"),
        ([1, 2], "IN_PROGRESS", "[1, 2], 12 s elapsed"),
        (None, "IN_PROGRESS", "running, 12 s elapsed"),
        (None, "IN_QUEUE", "in queue, 12 s elapsed"),
        ({"video": "AAAA"}, "COMPLETED", "completed, 12 s elapsed"),
    ],
)  # fmt: skip
def test_progress_lines(update: Any, status: str, text: str) -> None:
    assert client.format_progress(update, status=status, elapsed=12.0) == text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_display_draws_a_bar_on_a_terminal_and_lines_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("LINES", "30")
    terminal = _Terminal()
    display = client.Display(terminal)
    display.show("IN_PROGRESS", {"stage": "high_noise", "step": 1, "steps": 6, "percent": 15.0}, 2.0)
    display.show("COMPLETED", {"video": "AAAA"}, 3.0)
    display.close()
    drawn = terminal.getvalue()
    assert " 15%|" in drawn and "| sampling, high noise, step 1/6, 15%, 2.0 s elapsed" in drawn and "100%|" in drawn
    log = io.StringIO()
    display = client.Display(log)
    for step, percent, elapsed in ((1, 20.0, 1.0), (1, 20.0, 31.0), (1, 20.0, 95.0), (1, 23.4, 96.0), (2, 23.4, 97.0)):
        display.show("IN_PROGRESS", {"stage": "low_noise", "step": step, "steps": 6, "percent": percent, "elapsed": elapsed}, 0.0)
    for elapsed in (98.0, 130.0):
        display.show("IN_PROGRESS", {"stage": "loading", "step": 3, "steps": 13, "percent": 4.0, "elapsed": elapsed}, 0.0)
    display.show("COMPLETED", None, 131.0)
    display.show("COMPLETED", None, 132.0)
    # A line when the state changes (stage, step or percent); never one for the clock alone.
    assert log.getvalue().splitlines() == [
        "sampling, low noise, step 1/6, 20%, 1.0 s elapsed",
        "sampling, low noise, step 1/6, 23%, 1 min 36 s elapsed",
        "sampling, low noise, step 2/6, 23%, 1 min 37 s elapsed",
        "loading models, step 3/13, 4%, 1 min 38 s elapsed",
        "completed, 2 min 11 s elapsed",
    ]


def test_the_summary_says_where_a_slow_first_job_went() -> None:
    cold = {"status": "COMPLETED", "delayTime": 500, "executionTime": 180_000,
            "output": {"width": 64, "height": 64, "length": 5, "frame_rate": 24.0, "seed": 1,
                       "timings": {"boot_wait": 13.4, "execution": 146.8, "loading": 145.7, "total": 160.2}}}  # fmt: skip
    assert client.summary(["out.mp4"], cold, 181.0).endswith(
        "; 3 min 01 s in all, queued 0.5 s, ran 3 min 00 s, waited 13 s for ComfyUI to start, ComfyUI 2 min 27 s (loading models 2 min 26 s)"
    )
    warm = {"status": "COMPLETED", "output": {"timings": {"boot_wait": 0.001, "execution": 0.32, "loading": 0.08}}}
    assert client.summary(["out.mp4"], warm, 0.4) == "wrote out.mp4; 0.4 s in all, ComfyUI 0.3 s"


def test_the_summary_counts_the_videos_frames_and_the_steps_the_cache_skipped() -> None:
    interpolated = {"output": {"width": 64, "height": 64, "length": 5, "frames": 13, "frame_rate": 48.0, "interpolate": 3}}
    assert client.summary(["cat.mp4"], interpolated, 1.0).startswith("wrote cat.mp4: 64x64, 13 frames, 48 fps;")
    cached = {"output": {"length": 5, "cache": {"mode": "easy", "skipped_steps": 12, "steps": 20}}}
    assert client.summary(["out.mp4"], cached, 1.0).startswith("wrote out.mp4: 5 frames, 12 of 20 steps skipped by the cache;")
    assert client.summary(["out.mp4"], {"output": {"length": 5, "cache": {"mode": "easy"}}}, 1.0).startswith("wrote out.mp4: 5 frames;")


def test_job_errors_and_redaction() -> None:
    sdk_wrapped = '{"error_type": "<class \'KeyError\'>", "error_message": "\'x\'", "error_traceback": "Traceback ..."}'
    assert client.job_error({"status": "FAILED", "error": sdk_wrapped}) == "<class 'KeyError'>: 'x'"
    assert client.job_error({"status": "FAILED", "error": "timeout: too slow"}) == "timeout: too slow"
    assert client.job_error({"status": "TIMED_OUT"}).startswith("the job timed out on RunPod")
    assert client.redact("key sk-123 and " + "QUFB" * 100, "sk-123") == "key <api key> and <400 characters>"


def _args(tmp_path: Path, last_frame: bool = False) -> argparse.Namespace:
    return argparse.Namespace(output=tmp_path / "v.mp4", last_frame=tmp_path / "f.png" if last_frame else None)


MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_outputs_by_value_and_by_url(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "v.mp4").write_bytes(MP4)
    (served / "f.png").write_bytes(PNG)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        by_url = {"video_url": f"{base}/v.mp4?X-Amz-Signature=secret", "last_frame_url": f"{base}/f.png"}
        written = client.save_outputs({"status": "COMPLETED", "output": by_url}, _args(tmp_path, last_frame=True))
        assert (tmp_path / "v.mp4").read_bytes() == MP4 and (tmp_path / "f.png").read_bytes() == PNG
        assert written == [f"{tmp_path / 'v.mp4'} (76 B)", f"{tmp_path / 'f.png'} (40 B)"]
        with pytest.raises(client.ClientError, match=r"downloading http://127.0.0.1:\d+/gone.mp4 failed: HTTP 404") as exc:
            client.save_outputs({"status": "COMPLETED", "output": {"video_url": f"{base}/gone.mp4?sig=secret"}}, _args(tmp_path))
        assert "secret" not in str(exc.value)
    finally:
        server.shutdown()
    (tmp_path / "v.mp4").unlink()
    by_value = {"video": base64.b64encode(MP4).decode(), "last_frame": base64.b64encode(PNG).decode()}
    client.save_outputs({"status": "COMPLETED", "output": by_value}, _args(tmp_path, last_frame=True))
    assert (tmp_path / "v.mp4").read_bytes() == MP4


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"video": base64.b64encode(b"<html>not a video</html>").decode()}, "not an MP4"),
        ({"video": "not base64!"}, "not valid base64"),
        ({"filename": "x.mp4"}, "neither video nor video_url"),
        (None, "without an output"),
    ],
)
def test_bad_outputs_write_nothing(tmp_path: Path, output: Any, message: str) -> None:
    with pytest.raises(client.ClientError, match=message):
        client.save_outputs({"status": "COMPLETED", "output": output}, _args(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_missing_last_frame_is_an_error_after_the_video(tmp_path: Path) -> None:
    with pytest.raises(client.ClientError, match="returned no last frame"):
        client.save_outputs({"status": "COMPLETED", "output": {"video": base64.b64encode(MP4).decode()}}, _args(tmp_path, True))
    assert (tmp_path / "v.mp4").read_bytes() == MP4


def test_usage_errors_exit_2_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert client.main(["--endpoint", "ep", "--prompt", "x"]) == 2
    assert "set RUNPOD_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("RUNPOD_API_KEY", "k")
    assert client.main(["--endpoint", "ep/../x", "--prompt", "x"]) == 2
    assert client.main(["--endpoint", "ep", "--prompt", "x", "-o", str(tmp_path / "no" / "dir.mp4")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(8_000_000))
    assert client.main(["--endpoint", "ep", "--prompt", "x", "--image", str(big), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "over RunPod's 10.0 MB limit for /run" in capsys.readouterr().err


# ---- against the real worker on the stand-in platform -------------------------------------------------
@dataclass
class Stack:
    platform: FakeRunPod
    worker: subprocess.Popen
    worker_log: Path
    comfy_url: str
    image: Path
    tmp: Path

    def fault(self, **fault: Any) -> None:
        requests.post(f"{self.comfy_url}/__double__/faults", json=fault, timeout=5).raise_for_status()

    def client_env(self, api_key: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "RUNPOD_API_KEY": api_key or self.platform.api_key,
            "RUNPOD_ENDPOINT_BASE_URL": self.platform.base_url,
        }
        env.pop("RUNPOD_LOG_LEVEL", None)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(CLIENT), "--endpoint", self.platform.endpoint_id, "--poll", "0.1", *args]

    def run(self, *args: str, api_key: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=self.client_env(api_key), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args), env=self.client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("client")
    image = tmp / "start.png"
    image.write_bytes(base64.b64decode(png_b64(96, 64)))
    with FakeRunPod(hold=1.0) as platform:
        env = {**process_env(tmp), **platform.worker_env()}
        log = tmp / "worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen([sys.executable, "handler.py"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        try:
            comfy_url = f"http://127.0.0.1:{env['COMFY_PORT']}"
            wait_http(f"{comfy_url}/system_stats", timeout=60)
            platform.wait_for(lambda p: bool(p.heartbeats()), timeout=60)
            yield Stack(platform, worker, log, comfy_url, image, tmp)
        finally:
            stop_worker_api(worker)


def _stages(labels: list[str]) -> list[str]:
    """Stage names of progress lines, consecutive repeats dropped."""
    by_label = {label: stage for stage, label in client.STAGES.items()}
    seen: list[str] = []
    for line in labels:
        stage = next((s for label, s in by_label.items() if line.startswith(label + ",")), None)
        if stage and (not seen or seen[-1] != stage):
            seen.append(stage)
    return seen


def _in_order(stages: list[str]) -> bool:
    """The stages come in the worker's order, each once: none comes back (not ``loading`` between the
    two experts either, when ComfyUI loads the low-noise one)."""
    ranks = [STAGE_ORDER.index(s) for s in stages]
    return ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


def test_a_good_job_writes_a_decodable_mp4_and_shows_its_stages(stack: Stack) -> None:
    stack.fault(mode="step_delay", seconds=0.25)
    out = stack.tmp / "good.mp4"
    done = stack.run("--prompt", "a red ball", "--image", str(stack.image), *SMALL, "--seed", "42", "-o", str(out))
    assert done.returncode == 0, done.stderr
    video = decode_mp4(out.read_bytes())
    assert (video["width"], video["height"], video["frames"]) == (64, 48, 5)
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith(f"wrote {out} (") and "64x48, 5 frames, 24 fps, seed 42" in done.stdout
    assert re.search(r"queued [\d.]+ s, ran [\d.]+ s", done.stdout)
    stages = _stages(done.stderr.splitlines())
    assert [s for s in stages if s != "loading"][:2] == ["high_noise", "low_noise"] and _in_order(stages), done.stderr
    everything = done.stdout + done.stderr
    assert stack.platform.api_key not in everything and not BASE64_RUN.search(everything)


def test_progress_callbacks_see_the_stages_in_order(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import runpod

    monkeypatch.setattr(runpod, "endpoint_url_base", stack.platform.base_url)
    monkeypatch.setenv("RUNPOD_API_KEY", stack.platform.api_key)
    stack.fault(mode="step_delay", seconds=0.2)
    seen: list[tuple[str, Any]] = []
    argv = ["--endpoint", stack.platform.endpoint_id, "--poll", "0.05", "--prompt", "x", "--image", str(stack.image), *SMALL,
            "--steps", "8", "-o", str(tmp_path / "cb.mp4")]  # fmt: skip
    assert client.main(argv, on_progress=lambda status, update: seen.append((status, update))) == 0
    statuses = [status for status, _ in seen]
    assert statuses[-1] == "COMPLETED" and set(statuses[:-1]) <= {"IN_QUEUE", "IN_PROGRESS"}
    updates = [update for status, update in seen if status == "IN_PROGRESS" and update]
    stages = [u["stage"] for i, u in enumerate(updates) if i == 0 or u["stage"] != updates[i - 1]["stage"]]
    # A poll sees only the latest update: a quick (cached) loading stage may fall between two polls.
    assert [s for s in stages if s != "loading"][:2] == ["high_noise", "low_noise"] and _in_order(stages), stages
    assert len({u["step"] for u in updates if u["stage"] in ("high_noise", "low_noise")}) >= 3
    assert all(u["steps"] == 8 for u in updates if u["stage"] in ("high_noise", "low_noise"))


def test_a_failed_job_exits_1_with_the_workers_error(stack: Stack) -> None:
    done = stack.run("--prompt", "x", "--image", str(stack.image), "--width", "70", "-o", str(stack.tmp / "bad.mp4"))
    assert done.returncode == 1
    assert "FAILED: invalid_input: options.width: 70 is not a multiple of 16" in done.stderr
    assert not (stack.tmp / "bad.mp4").exists() and done.stdout == ""


def _wait_for_running(stack: Stack, proc: subprocess.Popen[str]) -> str:
    """The id of the client's job once the worker reports sampling and a ping lists it."""

    def running(platform: FakeRunPod) -> bool:
        assert proc.poll() is None, proc.communicate()
        return any(j.status == "IN_PROGRESS" and len(j.progress) >= 2 for j in platform.all_jobs())

    stack.platform.wait_for(running, timeout=30)
    job_id = next(j.id for j in stack.platform.all_jobs() if j.status == "IN_PROGRESS")
    stack.platform.wait_for(lambda p: any(job_id in h.get("job_id", "") for h in p.heartbeats()), timeout=10)
    return job_id


def test_ctrl_c_cancels_the_job_and_the_worker_takes_the_next(stack: Stack) -> None:
    stack.fault(mode="step_delay", seconds=0.3)
    proc = stack.popen("--prompt", "x", "--image", str(stack.image), *SMALL, "--steps", "40", "-o", str(stack.tmp / "c.mp4"))
    job_id = _wait_for_running(stack, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"interrupted: cancelling job {job_id}" in err and f"job {job_id}: CANCELLED" in err
    job = stack.platform.job(job_id)
    assert job.status == "CANCELLED" and job.output is None and not (stack.tmp / "c.mp4").exists()
    stack.platform.wait_for(lambda p: "Job stopped." in stack.worker_log.read_text(), timeout=20)
    after = stack.run("--prompt", "next", "--image", str(stack.image), *SMALL, "-o", str(stack.tmp / "next.mp4"))
    assert after.returncode == 0, after.stderr
    assert decode_mp4((stack.tmp / "next.mp4").read_bytes())["frames"] == 5
    assert stack.platform.job(job_id).status == "CANCELLED"


def test_timeout_cancels_the_job_and_exits_4(stack: Stack) -> None:
    stack.fault(mode="step_delay", seconds=0.5)
    before = {j.id for j in stack.platform.all_jobs()}
    stopped = stack.worker_log.read_text().count("Job stopped.")
    done = stack.run(
        "--prompt", "x", "--image", str(stack.image), *SMALL, "--steps", "40", "--timeout", "3", "-o", str(stack.tmp / "t.mp4")
    )
    assert done.returncode == 4, done.stderr
    assert "did not finish within the --timeout of 3 s; the job was cancelled" in done.stderr
    (job,) = [j for j in stack.platform.all_jobs() if j.id not in before]
    assert job.status == "CANCELLED"
    stack.platform.wait_for(lambda p: stack.worker_log.read_text().count("Job stopped.") > stopped, timeout=20)


def test_a_wrong_api_key_exits_3_and_says_so(stack: Stack) -> None:
    before = len(stack.platform.all_jobs())
    done = stack.run("--prompt", "x", "--image", str(stack.image), api_key="wrong-key-123")
    assert done.returncode == 3
    assert "the API key was refused (HTTP 401 Unauthorized): check RUNPOD_API_KEY" in done.stderr
    assert "wrong-key-123" not in done.stdout + done.stderr
    assert len(stack.platform.all_jobs()) == before


def test_the_platform_stays_faithful_to_the_status_shape(stack: Stack) -> None:
    """What curl sees: the client routes, their answers and the 401 without a key."""
    url = f"{stack.platform.base_url}/{stack.platform.endpoint_id}"
    auth = {"Authorization": f"Bearer {stack.platform.api_key}"}
    assert requests.get(f"{url}/health", timeout=5).status_code == 401
    body = {"input": {"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 48, "length": 5}}}
    done = requests.post(f"{url}/runsync", json=body, headers=auth, timeout=60).json()
    assert done["status"] == "COMPLETED" and {"delayTime", "executionTime", "workerId"} <= set(done)
    again = requests.get(f"{url}/status/{done['id']}", headers={"Authorization": stack.platform.api_key}, timeout=5).json()
    assert again["output"]["filename"] == done["output"]["filename"]
    assert requests.post(f"{url}/status/nope", headers=auth, timeout=5).status_code == 404
    health = requests.get(f"{url}/health", headers=auth, timeout=5).json()
    assert health["jobs"]["completed"] >= 1 and health["workers"]["idle"] + health["workers"]["running"] == 1


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("bash", "curl", "jq", "base64")), reason="needs bash, curl, jq")
def test_the_documented_curl_script_makes_a_video_and_fails_loudly(stack: Stack, tmp_path: Path) -> None:
    script = re.search(r"```bash\n(#!/usr/bin/env bash\n.*?)```", (REPO / "docs" / "client.md").read_text(), re.DOTALL)
    assert script, "docs/client.md lost its curl script"
    (tmp_path / "make.sh").write_text(script.group(1))
    (tmp_path / "cat.png").write_bytes(stack.image.read_bytes())
    env = {**stack.client_env(), "ENDPOINT_ID": stack.platform.endpoint_id}
    done = subprocess.run(["bash", "make.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    video = decode_mp4((tmp_path / "out.mp4").read_bytes())
    assert (video["width"], video["height"], video["frames"]) == (832, 480, 81)
    assert '"executionTime":' in done.stdout
    (tmp_path / "out.mp4").unlink()
    refused = subprocess.run(
        ["bash", "make.sh"], cwd=tmp_path, env={**env, "RUNPOD_API_KEY": "wrong"}, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "401" in refused.stderr and not (tmp_path / "out.mp4").exists()


# ---- the SDK's local API -----------------------------------------------------------------------------
def test_url_mode_against_the_local_api_writes_a_decodable_mp4(tmp_path: Path) -> None:
    port = free_port()
    worker = start_worker_api(process_env(tmp_path), port)
    try:
        image = tmp_path / "in.png"
        image.write_bytes(base64.b64decode(png_b64()))
        out = tmp_path / "local.mp4"
        argv = [sys.executable, str(CLIENT), "--url", f"http://127.0.0.1:{port}", "--prompt", "x", "--image", str(image), *SMALL,
                "-o", str(out)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("the local API reports no progress") == 1
        assert re.search(r"running, [\d.]+ s elapsed", done.stderr)
        assert decode_mp4(out.read_bytes())["frames"] == 5 and done.stdout.startswith(f"wrote {out}")
        bad = subprocess.run(
            [*argv[:-2], "-o", str(tmp_path / "bad.mp4"), "--steps", "0"], capture_output=True, text=True, timeout=60
        )
        assert bad.returncode == 1 and "FAILED: invalid_input: options.steps" in bad.stderr
    finally:
        stop_worker_api(worker)
