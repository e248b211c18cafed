"""The ComfyUI test double reproduces the recordings of the real ComfyUI v0.30.0.

Each test states which recording it checks. Websocket sequences are compared message by message on
type, order, node ids, progress values and data keys (never timestamps or generated ids).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import requests
import websocket
from PIL import Image

from tests.comfy_double import DoubleServer, create_model_files, media, recordings
from tests.comfy_double.cli import build_parser
from tests.comfy_double.faults import FaultSpecError, parse_faults
from tests.comfy_double.node_defs import LIVE_LISTS

REPO = Path(__file__).resolve().parent.parent
DOUBLE_DIR = REPO / "tests" / "comfy_double"
STORED_WORKFLOW = REPO / "workflows" / "wan22_i2v_14b_lightx2v.json"

#: The volume of the ``e2e_*`` / ``prompt_error_*`` recordings (the LoRA at the root of loras/).
RECORDED_MODEL_FILES = (
    "diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
    "diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
    "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "vae/wan_2.1_vae.safetensors",
    "loras/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",
)


# -- helpers ----------------------------------------------------------------------------------------


def write_test_image(path: Path, size: tuple[int, int] = (96, 72)) -> None:
    """Left half red, right half blue: easy to recognise in a decoded frame."""
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (220, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 220)
    Image.fromarray(pixels).save(path)


def recorded_prompt() -> dict[str, Any]:
    """The prompt of ``e2e_history.json`` (64x64, 5 frames, seed 42, save_metadata true)."""
    entry = next(iter(recordings.load_json("e2e_history.json").values()))
    return copy.deepcopy(entry["prompt"][2])


def recorded_ws(name: str) -> list[dict[str, Any]]:
    return [e["msg"] for e in recordings.load_jsonl(name) if e.get("kind") == "text"]


def canon(message: dict[str, Any]) -> tuple[Any, ...]:
    """What must match between a recorded and a produced message (no ids, times or file names)."""
    kind, data = message["type"], message["data"]
    if kind == "progress_state":
        return kind, tuple((k, v["state"], v["value"], v["max"]) for k, v in data["nodes"].items())
    if kind == "status":
        return kind, data["status"]["exec_info"]["queue_remaining"], "sid" in data
    if kind == "executing":
        return kind, data["node"], tuple(sorted(data))
    if kind == "progress":
        return kind, data["node"], data["value"], data["max"], tuple(sorted(data))
    if kind == "execution_cached":
        return kind, tuple(data["nodes"]), tuple(sorted(data))
    if kind == "executed":
        return kind, data["node"], tuple(sorted(data)), tuple(sorted(data["output"]["gifs"][0]))
    return kind, tuple(sorted(data))


def types(messages: list[dict[str, Any]], *, skip: tuple[str, ...] = ("status",)) -> list[str]:
    return [m["type"] for m in messages if m["type"] not in skip]


class WsClient:
    """websocket-client on a reader thread; messages are collected in order."""

    def __init__(self, url: str) -> None:
        self.conn = websocket.create_connection(url, timeout=10)
        self.messages: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                text = self.conn.recv()
                if not text:
                    break
                with self._cond:
                    self.messages.append(json.loads(text))
                    self._cond.notify_all()
        except (websocket.WebSocketException, OSError):
            pass
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed.is_set():
                    raise AssertionError(f"message not received; got {[m['type'] for m in self.messages]}")
                self._cond.wait(remaining)

    def wait_done(self, prompt_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait for ``executing node=null`` of ``prompt_id``; return every message so far."""
        self.wait_for(
            lambda m: m["type"] == "executing" and m["data"]["node"] is None and m["data"].get("prompt_id") == prompt_id, timeout
        )
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self.conn.close()
        self.closed.wait(5)


def of_prompt(messages: list[dict[str, Any]], prompt_id: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["data"].get("prompt_id") == prompt_id]


def post(server: DoubleServer, prompt: dict[str, Any], client_id: str, **extra: Any) -> requests.Response:
    return requests.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id, **extra}, timeout=10)


def queue(server: DoubleServer, prompt: dict[str, Any], client_id: str) -> str:
    response = post(server, prompt, client_id)
    assert response.status_code == 200, response.text
    return response.json()["prompt_id"]


class DoubleClient:
    """A websocket client of a double (connected once ``status`` arrives) that runs prompts to their end."""

    def __init__(self, server: DoubleServer) -> None:
        self.server = server
        self.client_id = str(uuid.uuid4())
        self.ws = WsClient(server.ws_url(self.client_id))
        self.ws.wait_for(lambda m: m["type"] == "status")

    def run(self, prompt: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """Queue ``prompt``; its id and every message from the POST to ``executing node=null``."""
        start = len(self.ws.messages)
        prompt_id = queue(self.server, prompt, self.client_id)
        return prompt_id, self.ws.wait_done(prompt_id)[start:]


def probe(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        return {
            "codec": stream.codec_context.name,
            "width": stream.width,
            "height": stream.height,
            "pix_fmt": stream.pix_fmt,
            "frames": len(frames),
            "average_rate": str(stream.average_rate),
            "duration_s": round(container.duration / 1_000_000, 6),
            "metadata": dict(container.metadata),
            "first": frames[0],
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def recorded_double(tmp_path: Path) -> Iterator[DoubleServer]:
    """A fresh double with the recordings' volume and their input image ``harness_input.png``."""
    create_model_files(tmp_path / "volume" / "models", RECORDED_MODEL_FILES)
    with DoubleServer(models_root=tmp_path / "volume" / "models", base_dir=tmp_path / "comfy") as server:
        write_test_image(server.input_dir / "harness_input.png")
        yield server


@pytest.fixture
def ws_client(recorded_double: DoubleServer) -> Iterator[WsClient]:
    client = WsClient(recorded_double.ws_url(str(uuid.uuid4())))
    yield client
    client.close()


def client_id_of(client: WsClient) -> str:
    """The ``sid`` the server announced in its first ``status`` message."""
    return client.wait_for(lambda m: m["type"] == "status" and "sid" in m["data"])["data"]["sid"]


# -- /prompt validation -----------------------------------------------------------------------------


def _set(node: str, name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: p[node]["inputs"].__setitem__(name, value)


BAD_PROMPTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "prompt_error_bad_link.json": _set("16", "samples", ["42", 0]),
    "prompt_error_missing_input_image.json": _set("1", "image", "no_such_file.png"),
    "prompt_error_missing_lora.json": _set("10", "lora_name", "missing_lora.safetensors"),
    "prompt_error_missing_model.json": _set("8", "unet_name", "wan2.2_i2v_high_noise_14B_DOES_NOT_EXIST.safetensors"),
    "prompt_error_no_output_node.json": lambda p: p.pop("17"),
    "prompt_error_unknown_node_class.json": lambda p: p.__setitem__("99", {"class_type": "DoesNotExistNode", "inputs": {}}),
    "prompt_error_width_below_min.json": _set("7", "width", 8),
    "prompt_error_width_wrong_type.json": _set("7", "width", "wide"),
}


def _strip_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [_strip_tracebacks(v) for v in value]
    return value


@pytest.mark.parametrize("recording", [*BAD_PROMPTS, "prompt_error_no_prompt_key.json"])
def test_rejected_prompts_match_the_recorded_400_bodies(recorded_double: DoubleServer, recording: str) -> None:
    expected = recordings.load_json(recording)["response"]
    if recording == "prompt_error_no_prompt_key.json":
        body: dict[str, Any] = {"client_id": "x"}
    else:
        prompt = recorded_prompt()
        BAD_PROMPTS[recording](prompt)
        body = {"prompt": prompt, "client_id": "x"}
    response = requests.post(f"{recorded_double.url}/prompt", json=body, timeout=10)
    assert response.status_code == expected["status"] == 400
    assert response.headers["Content-Type"] == expected["content_type"]
    assert _strip_tracebacks(response.json()) == _strip_tracebacks(expected["body"])


def test_client_prompt_id_must_be_a_lowercase_canonical_uuid(recorded_double: DoubleServer) -> None:
    good = str(uuid.uuid4())
    for bad in (good.upper(), good.replace("-", ""), "job-1", 42):
        response = post(recorded_double, recorded_prompt(), "c", prompt_id=bad)
        assert response.status_code == 400
        assert "lowercase canonical UUID" in response.json()["error"]["details"]
    response = post(recorded_double, recorded_prompt(), "c", prompt_id=good)
    assert response.status_code == 200
    assert response.json() == {"prompt_id": good, "number": 4, "node_errors": {}}


@pytest.mark.parametrize(
    ("recording", "node", "name", "value"),
    [("prompt_error_width_off_step.json", "7", "width", 70), ("prompt_error_length_off_step.json", "7", "length", 6)],
)
def test_off_step_values_are_accepted_and_rounded_down(
    recorded_double: DoubleServer, ws_client: WsClient, recording: str, node: str, name: str, value: int
) -> None:
    recorded = recordings.load_json(recording)
    warmup = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    ws_client.wait_done(warmup)
    prompt = recorded_prompt()
    prompt[node]["inputs"][name] = value
    prompt["14"]["inputs"]["noise_seed"] = prompt["15"]["inputs"]["noise_seed"] = 5
    response = post(recorded_double, prompt, client_id_of(ws_client))
    assert response.status_code == recorded["response"]["status"] == 200
    assert set(response.json()) == set(recorded["response"]["body"])
    prompt_id = response.json()["prompt_id"]
    ws_client.wait_done(prompt_id)
    entry = recorded_double.history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == recorded["accepted_run"]["status"] == "success"
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in recorded["accepted_run"]["history_status"]["messages"]]
    assert entry["status"]["messages"][1][1]["nodes"] == (recorded["accepted_run"]["history_status"]["messages"][1][1]["nodes"])
    video = probe(recorded_double.output_dir / entry["outputs"]["17"]["gifs"][0]["filename"])
    want = recorded["accepted_run"]["mp4"]
    assert (video["width"], video["height"], video["frames"]) == (want["width"], want["height"], want["decoded_frames"])


# -- a run: websocket sequence, history, video ------------------------------------------------------


def test_cold_run_sends_the_recorded_message_sequence(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    produced = ws_client.wait_done(prompt_id)
    assert [canon(m) for m in produced] == [canon(m) for m in recorded_ws("e2e_ws.jsonl")]


def test_history_has_the_recorded_shape(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    client_id = client_id_of(ws_client)
    prompt_id = queue(recorded_double, recorded_prompt(), client_id)
    ws_client.wait_done(prompt_id)
    body = requests.get(f"{recorded_double.url}/history/{prompt_id}", timeout=10).json()
    recorded = next(iter(recordings.load_json("e2e_history.json").values()))
    entry = body[prompt_id]
    assert list(entry) == list(recorded) == ["prompt", "outputs", "status", "meta"]
    number, pid, prompt, extra, outputs = entry["prompt"]
    assert (number, pid, prompt, outputs) == (0, prompt_id, recorded["prompt"][2], ["17"])
    assert list(extra) == list(recorded["prompt"][3]) == ["client_id", "create_time"]
    assert extra["client_id"] == client_id
    gif = entry["outputs"]["17"]["gifs"][0]
    recorded_gif = recorded["outputs"]["17"]["gifs"][0]
    assert list(gif) == list(recorded_gif)
    assert gif == {
        **recorded_gif,
        "filename": "wan22_00001.mp4",
        "workflow": "wan22_00001.png",
        "fullpath": str(recorded_double.output_dir / "wan22_00001.mp4"),
    }
    assert entry["meta"] == recorded["meta"]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [(m[0], sorted(m[1])) for m in entry["status"]["messages"]] == [
        (m[0], sorted(m[1])) for m in recorded["status"]["messages"]
    ]
    assert requests.get(f"{recorded_double.url}/history", timeout=10).json() == body


def test_the_video_is_a_real_h264_mp4_like_the_recorded_probe(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    ws_client.wait_done(prompt_id)
    video = probe(recorded_double.output_dir / "wan22_00001.mp4")
    want = recordings.load_json("e2e_mp4_probe.json")["probe"]
    for key in ("codec", "width", "height", "pix_fmt", "average_rate", "duration_s"):
        assert video[key] == want[key], key
    assert video["frames"] == want["decoded_frames"]
    assert sorted(video["metadata"]) == want["metadata_keys"]
    assert json.loads(video["metadata"]["prompt"])["17"]["inputs"]["save_metadata"] is True
    assert b"crf=19.0" in (recorded_double.output_dir / "wan22_00001.mp4").read_bytes()
    first = video["first"].astype(int)  # fill / crop of the red|blue image: red left, blue right
    assert first[:, :20, 0].mean() > 150 and first[:, :20, 2].mean() < 80
    assert first[:, -20:, 2].mean() > 150 and first[:, -20:, 0].mean() < 80
    assert (recorded_double.output_dir / "wan22_00001.png").is_file()


def test_warm_rerun_is_cached_and_identical_prompt_writes_no_new_file(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    client_id = client_id_of(ws_client)
    cold = queue(recorded_double, recorded_prompt(), client_id)
    ws_client.wait_done(cold)
    start = len(ws_client.messages)
    warm_prompt = recorded_prompt()
    warm_prompt["14"]["inputs"]["noise_seed"] = warm_prompt["15"]["inputs"]["noise_seed"] = 43
    warm = queue(recorded_double, warm_prompt, client_id)
    produced = ws_client.wait_done(warm)[start:]
    recorded = recorded_ws("e2e_warm_ws.jsonl")[1:]  # without the connect status
    assert [canon(m) for m in produced] == [canon(m) for m in recorded]
    files = sorted(p.name for p in recorded_double.output_dir.iterdir())
    assert files == ["wan22_00001.mp4", "wan22_00001.png", "wan22_00002.mp4", "wan22_00002.png"]

    start = len(ws_client.messages)
    again = queue(recorded_double, warm_prompt, client_id)
    produced = ws_client.wait_done(again)[start:]
    assert types(produced) == [
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "executing",
    ]
    assert of_prompt(produced, again)[1]["data"]["nodes"] == [str(n) for n in range(1, 18)]
    assert sorted(p.name for p in recorded_double.output_dir.iterdir()) == files
    entry = recorded_double.history(again)[again]
    assert entry["outputs"]["17"]["gifs"][0]["filename"] == "wan22_00002.mp4"
    assert entry["status"]["status_str"] == "success"


def test_stored_workflow_832x480x81_runs_fast_and_shows_the_input(comfy_double: DoubleServer) -> None:
    workflow = json.loads(STORED_WORKFLOW.read_text())
    write_test_image(comfy_double.input_dir / "input.png", (640, 480))
    for node, values in {
        "2": {"width": 832, "height": 480},
        "4": {"text": "a red and blue flag"},
        "7": {"width": 832, "height": 480, "length": 81},
        "14": {"noise_seed": 7},
        "15": {"noise_seed": 7},
        "17": {"filename_prefix": "job_123"},
    }.items():
        workflow[node]["inputs"].update(values)
    client = WsClient(comfy_double.ws_url("worker"))
    try:
        started = time.perf_counter()
        prompt_id = queue(comfy_double, workflow, "worker")
        client.wait_done(prompt_id)
        seconds = time.perf_counter() - started
    finally:
        client.close()
    logging.getLogger(__name__).info("832x480x81 run: %.2f s", seconds)
    assert seconds < 5.0
    entry = comfy_double.history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "success"
    video = probe(comfy_double.output_dir / "job_123_00001.mp4")
    assert (video["width"], video["height"], video["frames"], video["average_rate"]) == (832, 480, 81, "24")
    assert "prompt" not in video["metadata"]  # the stored workflow has save_metadata false
    first = video["first"].astype(int)
    assert first[:, :100, 0].mean() > 150 and first[:, -100:, 2].mean() > 150


@pytest.mark.parametrize(
    ("method", "shape"),
    [("stretch", (64, 64)), ("keep proportion", (32, 64)), ("fill / crop", (64, 64)), ("pad", (64, 64))],
)
def test_image_resize_plus_methods(method: str, shape: tuple[int, int]) -> None:
    image = np.full((100, 200, 3), 200, dtype=np.uint8)
    out = media.image_resize_plus(image, 64, 64, method, "lanczos", "always", 16)
    assert out.shape[:2] == shape
    if method == "pad":  # a 2:1 image padded into a square: black bars top and bottom
        assert out[:8].max() == 0 and out[-8:].max() == 0 and out[32].min() > 150


def test_pad_method_reaches_the_video(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    write_test_image(recorded_double.input_dir / "wide.png", (200, 100))
    prompt = recorded_prompt()
    prompt["1"]["inputs"]["image"] = "wide.png"
    prompt["2"]["inputs"]["method"] = "pad"
    prompt_id = queue(recorded_double, prompt, client_id_of(ws_client))
    ws_client.wait_done(prompt_id)
    first = np.asarray(Image.open(recorded_double.output_dir / "wan22_00001.png"))
    assert first[:8].max() < 30 and first[-8:].max() < 30 and first[32, 5, 0] > 150


# -- runtime errors, interrupts, queue --------------------------------------------------------------


def test_corrupt_image_fails_at_load_image_like_the_recording(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    ws_client.wait_done(queue(recorded_double, recorded_prompt(), client_id_of(ws_client)))  # as recorded: warm
    (recorded_double.input_dir / "corrupt_input.png").write_bytes(b"not a png at all")
    prompt = recorded_prompt()
    prompt["1"]["inputs"]["image"] = "corrupt_input.png"
    start = len(ws_client.messages)
    prompt_id = queue(recorded_double, prompt, client_id_of(ws_client))
    produced = ws_client.wait_done(prompt_id)[start:]
    recorded = recorded_ws("runtime_error_ws.jsonl")
    assert [canon(m) for m in produced] == [canon(m) for m in recorded[1:]]
    error = next(m for m in produced if m["type"] == "execution_error")["data"]
    want = next(m for m in recorded if m["type"] == "execution_error")["data"]
    assert list(error) == list(want)
    assert (error["node_id"], error["node_type"], error["executed"], error["exception_type"]) == (
        "1",
        "LoadImage",
        [],
        "PIL.UnidentifiedImageError",
    )
    path = recorded_double.input_dir / "corrupt_input.png"
    assert error["exception_message"] == f"cannot identify image file '{path}'\n"
    assert error["current_inputs"] == want["current_inputs"]
    assert sorted(error["current_outputs"], key=int) == sorted(want["current_outputs"], key=int)
    entry = recorded_double.history(prompt_id)[prompt_id]
    recorded_entry = next(iter(recordings.load_json("runtime_error_history.json").values()))
    assert (entry["outputs"], entry["meta"]) == (recorded_entry["outputs"], recorded_entry["meta"]) == ({}, {})
    assert {k: v for k, v in entry["status"].items() if k != "messages"} == {"status_str": "error", "completed": False}
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in recorded_entry["status"]["messages"]]


def test_interrupt_targets_only_the_running_prompt(
    recorded_double: DoubleServer, ws_client: WsClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client_id = client_id_of(ws_client)
    ws_client.wait_done(queue(recorded_double, recorded_prompt(), client_id))  # warm the cache
    recorded = recordings.load_json("interrupt_other_prompt.json")
    prompts = []
    for seed in (101, 102):
        prompt = recorded_prompt()
        prompt["14"]["inputs"]["noise_seed"] = prompt["15"]["inputs"]["noise_seed"] = seed
        prompts.append(prompt)
    recorded_double.add_faults({"mode": "step_delay", "seconds": 0.05})
    a = queue(recorded_double, prompts[0], client_id)
    b = queue(recorded_double, prompts[1], client_id)
    ws_client.wait_for(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == a)
    recorded_double.add_faults({"mode": "step_delay", "seconds": 0.5})  # armed when B starts
    unknown = str(uuid.uuid4())
    for target in (unknown, b):
        response = requests.post(f"{recorded_double.url}/interrupt", json={"prompt_id": target}, timeout=10)
        assert (response.status_code, response.content, response.headers.get("Content-Type")) == (200, b"", None)
    body = requests.get(f"{recorded_double.url}/queue", timeout=10).json()
    assert [e[1] for e in body["queue_running"]] == [a] and [e[1] for e in body["queue_pending"]] == [b]

    ws_client.wait_done(a)
    entry_a = recorded_double.history(a)[a]
    assert entry_a["status"]["status_str"] == recorded["steps"][4]["history_status"]["status_str"] == "success"
    assert entry_a["status"]["messages"][1][1]["nodes"] == recorded["steps"][4]["history_status"]["messages"][1][1]["nodes"]

    ws_client.wait_for(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == b)
    response = requests.post(f"{recorded_double.url}/interrupt", json={"prompt_id": b}, timeout=10)
    assert response.status_code == 200
    produced = ws_client.wait_done(b)
    assert types(of_prompt(produced, b)) == recorded["steps"][6]["ws_types_for_B"]
    interrupted = next(m for m in produced if m["type"] == "execution_interrupted")["data"]
    assert (interrupted["node_id"], interrupted["node_type"], interrupted["executed"]) == ("14", "KSamplerAdvanced", [])
    entry_b = recorded_double.history(b)[b]
    want_b = recorded["steps"][6]["history_status"]
    assert (entry_b["status"]["status_str"], entry_b["status"]["completed"]) == (want_b["status_str"], want_b["completed"])
    assert [(m[0], sorted(m[1])) for m in entry_b["status"]["messages"]] == [(m[0], sorted(m[1])) for m in want_b["messages"]]
    assert entry_b["outputs"] == {}
    assert f"Prompt {unknown} is not currently running, skipping interrupt" in caplog.messages
    assert f"Prompt {b} is not currently running, skipping interrupt" in caplog.messages
    assert "Processing interrupted" in caplog.messages


def test_global_interrupt_matches_the_interrupt_recording(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    recorded_double.add_faults({"mode": "step_delay", "seconds": 0.05})
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    ws_client.wait_for(lambda m: m["type"] == "progress")
    requests.post(f"{recorded_double.url}/interrupt", timeout=10)
    produced = ws_client.wait_done(prompt_id)
    recorded = recorded_ws("interrupt_ws.jsonl")
    assert types(produced)[-3:] == types(recorded)[-3:] == ["progress", "execution_interrupted", "executing"]
    assert list(produced[-3]["data"]) == list(recorded[-3]["data"])
    assert produced[-2] == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}
    entry = recorded_double.history(prompt_id)[prompt_id]
    want = next(iter(recordings.load_json("interrupt_history.json").values()))
    assert (entry["outputs"], entry["meta"], entry["status"]["status_str"], entry["status"]["completed"]) == (
        want["outputs"],
        want["meta"],
        "error",
        False,
    )


def test_queue_history_and_delete_while_running(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    recorded = recordings.load_json("queue_and_history_while_running.json")
    steps = {step["step"].split(" (")[0]: step for step in recorded["steps"]}
    client_id = client_id_of(ws_client)
    recorded_double.add_faults({"mode": "step_delay", "seconds": 0.1})
    prompt_b = recorded_prompt()
    prompt_b["14"]["inputs"]["noise_seed"] = 9
    a = queue(recorded_double, recorded_prompt(), client_id)
    ws_client.wait_for(lambda m: m["type"] == "execution_start" and m["data"]["prompt_id"] == a)
    b = queue(recorded_double, prompt_b, client_id)
    ws_client.wait_for(lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 2)
    body = requests.get(f"{recorded_double.url}/queue", timeout=10).json()
    want = steps["GET /queue while A runs and B waits"]["body"]
    for key in ("queue_running", "queue_pending"):
        assert len(body[key]) == 1 and len(body[key][0]) == len(want[key][0]) == 5
        number, pid, prompt, extra, outputs = body[key][0]
        assert list(extra) == list(want[key][0][3]) and outputs == want[key][0][4] == ["17"]
    assert [body["queue_running"][0][1], body["queue_pending"][0][1]] == [a, b]
    assert requests.get(f"{recorded_double.url}/prompt", timeout=10).json() == steps["GET /prompt"]["response"]["body"]
    for pid in (a, b):
        response = requests.get(f"{recorded_double.url}/history/{pid}", timeout=10)
        assert (response.status_code, response.json()) == (200, {})
    count = len(ws_client.messages)
    response = requests.post(f"{recorded_double.url}/queue", json={"delete": [b]}, timeout=10)
    assert (response.status_code, response.content, response.headers.get("Content-Type")) == (200, b"", None)
    ws_client.wait_for(lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 1)
    response = requests.post(f"{recorded_double.url}/queue", json={"delete": [str(uuid.uuid4())]}, timeout=10)
    assert (response.status_code, response.content) == (200, b"")
    assert requests.get(f"{recorded_double.url}/prompt", timeout=10).json() == {"exec_info": {"queue_remaining": 1}}
    produced = ws_client.wait_done(a)
    statuses = [m for m in produced[count:] if m["type"] == "status"][:2]
    assert all(m["data"]["status"]["exec_info"]["queue_remaining"] == 1 for m in statuses) and len(statuses) == 2
    time.sleep(0.2)
    assert recorded_double.history(b) == {} and not of_prompt(ws_client.messages, b)
    assert requests.get(f"{recorded_double.url}/queue", timeout=10).json() == {"queue_running": [], "queue_pending": []}


def test_reconnect_mid_run_and_after_the_end(recorded_double: DoubleServer) -> None:
    client_id = str(uuid.uuid4())
    first = WsClient(recorded_double.ws_url(client_id))
    first.wait_for(lambda m: m["type"] == "status")
    recorded_double.add_faults({"mode": "step_delay", "seconds": 0.1})
    prompt_id = queue(recorded_double, recorded_prompt(), client_id)
    first.wait_for(lambda m: m["type"] == "progress" and m["data"]["node"] == "14")
    first.close()
    time.sleep(0.15)  # messages sent now are lost
    second = WsClient(recorded_double.ws_url(client_id))
    produced = second.wait_done(prompt_id)
    second.close()
    recorded = [e for e in recordings.load_jsonl("ws_reconnect_midrun.jsonl") if e.get("conn") == 2 and e["kind"] == "text"]
    assert produced[0]["type"] == "status" and produced[0]["data"]["sid"] == client_id
    assert list(produced[0]["data"]) == list(recorded[0]["msg"]["data"])
    assert produced[1] == {"type": "executing", "data": {"node": "14"}}
    assert list(recorded[1]["msg"]["data"]) == ["node"]
    assert "execution_start" not in types(produced)
    assert types(produced, skip=("status", "progress_state"))[-3:] == ["executed", "execution_success", "executing"]

    third = WsClient(recorded_double.ws_url(client_id))
    time.sleep(0.3)
    third.close()
    after = [
        e["msg"] for e in recordings.load_jsonl("ws_reconnect_after_end.jsonl") if e.get("conn") == 2 and e["kind"] == "text"
    ]
    assert [canon(m) for m in third.messages] == [canon(m) for m in after]


def test_messages_go_only_to_the_queueing_client(recorded_double: DoubleServer) -> None:
    mine, other = WsClient(recorded_double.ws_url("mine")), WsClient(recorded_double.ws_url("other"))
    prompt_id = queue(recorded_double, recorded_prompt(), "mine")
    mine.wait_done(prompt_id)
    time.sleep(0.1)
    mine.close()
    other.close()
    assert {m["type"] for m in other.messages} == {"status"}
    assert len(other.messages) >= 4  # connect, put, get, done


# -- files, models, node definitions ------------------------------------------------------------------


def test_view_answers_like_the_recording(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    ws_client.wait_done(prompt_id)
    recorded = recordings.load_json("view_mp4_response.json")
    url = f"{recorded_double.url}/view?filename=wan22_00001.mp4&type=output&subfolder="
    size = (recorded_double.output_dir / "wan22_00001.mp4").stat().st_size
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and len(response.content) == size
    assert set(recorded["GET"]["all_headers"]) - {"Date", "Server"} <= set(response.headers)
    assert response.headers["Content-Type"] == recorded["GET"]["content_type"]
    assert response.headers["Content-Disposition"] == 'filename="wan22_00001.mp4"'
    assert response.headers["Accept-Ranges"] == "bytes" and response.headers["X-Content-Type-Options"] == "nosniff"
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(size)
    ranged = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=10)
    assert (ranged.status_code, len(ranged.content), ranged.headers["Content-Range"]) == (206, 100, f"bytes 0-99/{size}")
    missing = requests.get(f"{recorded_double.url}{recorded['GET missing file']['query']}", timeout=10)
    assert (missing.status_code, missing.content, missing.headers.get("Content-Type")) == (404, b"", None)
    traversal = requests.get(f"{recorded_double.url}/view?filename=../x.mp4&type=output", timeout=10)
    assert traversal.status_code == 400
    escape = requests.get(f"{recorded_double.url}/view?filename=x.mp4&type=output&subfolder=../..", timeout=10)
    assert escape.status_code == 403


def test_models_endpoints_and_a_model_added_at_runtime(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    recorded = recordings.load_json("models_endpoints.json")["requests"]
    url = recorded_double.url
    assert requests.get(f"{url}/models", timeout=10).json() == recorded["GET /models"]["body"]
    for folder in ("diffusion_models", "text_encoders", "vae", "loras", "checkpoints"):
        want = [f for f in recorded[f"GET /models/{folder}"]["body"] if "/" not in f]
        assert requests.get(f"{url}/models/{folder}", timeout=10).json() == want
    for folder in ("unet", "clip", "no_such_folder"):
        response = requests.get(f"{url}/models/{folder}", timeout=10)
        assert (response.status_code, response.content, response.headers.get("Content-Type")) == (404, b"", None)
    assert (
        requests.get(f"{url}/api/models/diffusion_models", timeout=10).json()
        == recorded["GET /api/models/diffusion_models"]["body"]
    )

    loras = recorded_double.models_root / "loras"
    (loras / "wan").mkdir()
    (loras / "wan" / "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors").touch()
    (loras / "notes.txt").touch()
    assert requests.get(f"{url}/models/loras", timeout=10).json() == recorded["GET /models/loras"]["body"]

    added = recorded_double.models_root / "unet" / "wan2.2_added_while_running.safetensors"
    added.parent.mkdir()
    added.touch()
    unets = requests.get(f"{url}/object_info/UNETLoader", timeout=10).json()["UNETLoader"]["input"]["required"]["unet_name"]
    assert unets[0][0] == "wan2.2_added_while_running.safetensors"
    prompt = recorded_prompt()
    prompt["8"]["inputs"]["unet_name"] = added.name
    prompt_id = queue(recorded_double, prompt, client_id_of(ws_client))
    ws_client.wait_done(prompt_id)
    assert recorded_double.history(prompt_id)[prompt_id]["status"]["status_str"] == "success"
    added.unlink()
    assert added.name not in requests.get(f"{url}/models/diffusion_models", timeout=10).json()
    assert post(recorded_double, prompt, "x").status_code == 400


def test_object_info_is_the_recording_with_live_lists(recorded_double: DoubleServer) -> None:
    recorded = recordings.object_info()
    served = requests.get(f"{recorded_double.url}/object_info", timeout=10).json()
    assert list(served) == list(recorded)
    for name, info in recorded.items():
        got = copy.deepcopy(served[name])
        for cls, field in LIVE_LISTS:
            if cls == name:
                spec, recorded_spec = got["input"]["required"][field], info["input"]["required"][field]
                if spec[0] == "COMBO":  # a v3 schema node: its list is the COMBO's "options"
                    spec[1]["options"] = recorded_spec[1]["options"]
                else:
                    spec[0] = recorded_spec[0]
        assert got == info, name
    assert served["VAELoader"]["input"]["required"]["vae_name"][0] == ["wan_2.1_vae.safetensors", "pixel_space"]
    assert served["LoadImage"]["input"]["required"]["image"][0] == ["harness_input.png"]
    assert requests.get(f"{recorded_double.url}/object_info/KSamplerAdvanced", timeout=10).json() == {
        "KSamplerAdvanced": recorded["KSamplerAdvanced"]
    }
    assert requests.get(f"{recorded_double.url}/object_info/Nope", timeout=10).json() == {}


def test_upload_image_answers_and_renames_like_comfyui(recorded_double: DoubleServer) -> None:
    url = f"{recorded_double.url}/upload/image"
    recorded = recordings.load_json("upload_image_response.json")

    def upload(content: bytes, **fields: str) -> requests.Response:
        return requests.post(url, files={"image": ("harness_input.png", content, "image/png")}, data=fields, timeout=10)

    response = upload(b"one", overwrite="true")
    assert (response.status_code, response.headers["Content-Type"]) == (recorded["status"], recorded["content_type"])
    assert response.json() == recorded["body"]
    assert upload(b"two").json()["name"] == "harness_input (1).png"
    assert upload(b"two").json()["name"] == "harness_input (1).png"  # same bytes: not saved again
    assert upload(b"three", subfolder="jobs").json() == {"name": "harness_input.png", "subfolder": "jobs", "type": "input"}
    assert (recorded_double.input_dir / "jobs" / "harness_input.png").read_bytes() == b"three"
    assert requests.post(url, data={"overwrite": "true"}, timeout=10).status_code == 400


def test_system_stats_is_recorded_with_the_real_argv(recorded_double: DoubleServer) -> None:
    body = requests.get(f"{recorded_double.url}/system_stats", timeout=10).json()
    want = recordings.system_stats()
    assert body["system"]["argv"][:3] == ["main.py", "--listen", "127.0.0.1"]
    body["system"]["argv"] = want["system"]["argv"]
    assert body == want


# -- fault switches and the control API -------------------------------------------------------------


def test_runtime_error_fault_is_a_cuda_oom_at_the_sampler(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    response = requests.post(f"{recorded_double.url}/__double__/faults", json={"mode": "runtime_error"}, timeout=10)
    assert response.status_code == 200 and response.json()["faults"][0]["mode"] == "runtime_error"
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    produced = of_prompt(ws_client.wait_done(prompt_id), prompt_id)
    assert types(produced)[-2:] == ["execution_error", "executing"]
    error = produced[-2]["data"]
    assert (error["node_id"], error["exception_type"]) == ("14", "torch.OutOfMemoryError")
    assert error["exception_message"].startswith("CUDA out of memory.") and "TIPS:" in error["exception_message"]
    assert recorded_double.history(prompt_id)[prompt_id]["status"]["status_str"] == "error"
    assert requests.get(f"{recorded_double.url}/__double__/faults", timeout=10).json() == {"faults": []}

    recorded_double.add_faults(
        {"mode": "runtime_error", "node_type": "VAEDecode", "exception_type": "RuntimeError", "exception_message": "boom"}
    )
    prompt = recorded_prompt()
    prompt["14"]["inputs"]["noise_seed"] = 1
    prompt_id = queue(recorded_double, prompt, client_id_of(ws_client))
    error = of_prompt(ws_client.wait_done(prompt_id), prompt_id)[-2]["data"]
    assert (error["node_id"], error["exception_type"], error["exception_message"]) == ("16", "RuntimeError", "boom\n")


def test_hang_fault_keeps_http_up_and_ignores_interrupt(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    recorded_double.add_faults({"mode": "hang"})
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    ws_client.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == "14")
    assert requests.post(f"{recorded_double.url}/interrupt", timeout=5).status_code == 200
    time.sleep(0.3)
    assert types(ws_client.messages)[-1] == "executing"  # nothing after the sampler started
    assert [e[1] for e in requests.get(f"{recorded_double.url}/queue", timeout=5).json()["queue_running"]] == [prompt_id]
    assert requests.get(f"{recorded_double.url}/history/{prompt_id}", timeout=5).json() == {}
    assert requests.post(f"{recorded_double.url}/__double__/reset", timeout=5).json() == {"reset": ["faults", "observations"]}
    ws_client.wait_done(prompt_id)
    assert recorded_double.history(prompt_id)[prompt_id]["status"]["status_str"] == "success"


def test_freeze_fault_stops_http_until_released(recorded_double: DoubleServer) -> None:
    recorded_double.add_faults({"mode": "freeze", "immediate": True})
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{recorded_double.url}/queue", timeout=0.5)
    assert recorded_double.state()["frozen"] is True
    recorded_double.reset()
    assert requests.get(f"{recorded_double.url}/queue", timeout=5).status_code == 200


def test_crash_fault_in_process_closes_listener_and_sockets(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    recorded_double.add_faults({"mode": "crash"})
    queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    assert ws_client.closed.wait(10)
    assert any(m["type"] == "progress" for m in ws_client.messages)  # it died mid-sampling
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{recorded_double.url}/queue", timeout=2)
    assert recorded_double.crashed


def test_ws_drop_fault_closes_sockets_and_the_run_completes(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    recorded_double.add_faults({"mode": "ws_drop"})
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    assert ws_client.closed.wait(10)
    assert types(ws_client.messages)[-1] == "executing" and ws_client.messages[-1]["data"]["node"] == "16"
    entry = recorded_double.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert (recorded_double.output_dir / "wan22_00001.mp4").is_file()


def test_missing_output_fault_reports_a_file_that_does_not_exist(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    recorded_double.add_faults({"mode": "missing_output"})
    prompt_id = queue(recorded_double, recorded_prompt(), client_id_of(ws_client))
    ws_client.wait_done(prompt_id)
    gif = recorded_double.history(prompt_id)[prompt_id]["outputs"]["17"]["gifs"][0]
    assert gif["filename"] == "wan22_00001.mp4" and not Path(gif["fullpath"]).exists()
    response = requests.get(f"{recorded_double.url}/view?filename=wan22_00001.mp4&type=output", timeout=5)
    assert response.status_code == 404


def test_fault_specs_are_checked() -> None:
    assert parse_faults({"faults": [{"mode": "step_delay"}]})[0].seconds == 0.5
    assert parse_faults({"mode": "hang", "times": None})[0].remaining is None
    for bad in ({"mode": "nope"}, {"mode": "hang", "times": 0}, {"mode": "hang", "colour": 1}, {"mode": "boot_exit"}):
        with pytest.raises(FaultSpecError):
            parse_faults(bad)


def test_state_records_what_the_worker_did(recorded_double: DoubleServer, ws_client: WsClient) -> None:
    client_id = client_id_of(ws_client)
    requests.post(
        f"{recorded_double.url}/upload/image",
        files={"image": ("job.png", b"png", "image/png")},
        data={"overwrite": "true"},
        timeout=10,
    )
    prompt_id = queue(recorded_double, recorded_prompt(), client_id)
    ws_client.wait_done(prompt_id)
    requests.post(f"{recorded_double.url}/interrupt", json={"prompt_id": prompt_id}, timeout=10)
    requests.post(f"{recorded_double.url}/queue", json={"delete": ["x"]}, timeout=10)
    (recorded_double.input_dir / "job.png").unlink()
    response = requests.post(f"{recorded_double.url}/__double__/faults", json={"mode": "bad"}, timeout=10)
    assert response.status_code == 400 and "unknown fault mode" in response.json()["error"]
    state = requests.get(f"{recorded_double.url}/__double__/state", timeout=10).json()
    assert [p["prompt_id"] for p in state["prompts"]] == [prompt_id]
    assert state["prompts"][0]["body"]["client_id"] == client_id and state["prompts"][0]["status"] == 200
    assert [(u["name"], u["overwrite"]) for u in state["uploads"]] == [("job.png", "true")]
    assert [(i["prompt_id"], i["effective"]) for i in state["interrupts"]] == [(prompt_id, False)]
    assert state["queue_requests"][0]["body"] == {"delete": ["x"]}
    assert [c["client_id"] for c in state["ws_connections"]] == [client_id]
    assert state["files"] == {"input": ["harness_input.png"], "output": ["wan22_00001.mp4", "wan22_00001.png"], "temp": []}
    assert state["executions"][0]["status_str"] == "success" and state["history_ids"] == [prompt_id]


# -- the child process --------------------------------------------------------------------------------


def test_cli_rejects_unknown_and_conflicting_flags(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (["--lisen", "x"], ["--use-sage-attention", "--use-flash-attention"], ["--preview-method", "fast"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
    args = parser.parse_args(
        [
            "--extra-model-paths-config",
            "a.yaml",
            "--extra-model-paths-config",
            "b.yaml",
            "c.yaml",
            "--verbose",
            "DEBUG",
            "--listen",
        ]
    )
    assert args.extra_model_paths_config == [["a.yaml"], ["b.yaml", "c.yaml"]]
    assert (args.verbose, args.listen) == ("DEBUG", "0.0.0.0,::")


def _launch(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "main.py", *args],
        cwd=DOUBLE_DIR,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def test_child_process_boot_modes(tmp_path: Path) -> None:
    bad = _launch(["--listen", "127.0.0.1", "--no-such-flag"])
    assert bad.wait(20) == 2 and "unrecognized arguments: --no-such-flag" in bad.stderr.read()
    quick = _launch(["--quick-test-for-ci", "--cpu", "--base-directory", str(tmp_path)])
    assert quick.wait(20) == 0 and not (DOUBLE_DIR / "output").exists()
    boot_exit = _launch(["--port", str(free_port())], env={"COMFY_DOUBLE_FAULTS": '{"mode": "boot_exit"}'})
    assert boot_exit.wait(20) == 1 and "boot_exit" in boot_exit.stderr.read()
    for proc in (bad, quick, boot_exit):
        proc.stdout.close()
        proc.stderr.close()


def test_child_process_runs_a_prompt_then_crashes_on_request(tmp_path: Path) -> None:
    volume = tmp_path / "runpod-volume"
    create_model_files(volume / "models", RECORDED_MODEL_FILES[:1] + RECORDED_MODEL_FILES[2:])
    create_model_files(volume / "models", ["unet/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"])
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(
        f"runpod_volume:\n  base_path: {volume}\n  diffusion_models: |\n    models/diffusion_models\n    models/unet\n"
        "  text_encoders: |\n    models/text_encoders\n    models/clip\n  vae: models/vae\n  loras: models/loras\n"
    )
    work = tmp_path / "work"
    port = free_port()
    argv = [
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--input-directory",
        str(work / "input"),
        "--output-directory",
        str(work / "output"),
        "--temp-directory",
        str(work / "temp"),
        "--user-directory",
        str(work / "user"),
        "--extra-model-paths-config",
        str(config),
        "--disable-auto-launch",
        "--preview-method",
        "none",
        "--use-pytorch-cross-attention",
        "--disable-pinned-memory",
        "--cpu",
        "--disable-metadata",
        "--log-stdout",
        "--verbose",
        "INFO",
    ]
    proc = _launch(argv)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = requests.get(f"{url}/system_stats", timeout=1).json()
                break
            except requests.exceptions.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert stats["system"]["argv"] == ["main.py", *argv]
        assert requests.get(f"{url}/models/diffusion_models", timeout=5).json() == [
            "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
            "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
        ]
        write_test_image(work / "input" / "harness_input.png")
        client = WsClient(f"ws://127.0.0.1:{port}/ws?clientId=child")
        prompt_id = requests.post(f"{url}/prompt", json={"prompt": recorded_prompt(), "client_id": "child"}, timeout=10).json()[
            "prompt_id"
        ]
        client.wait_done(prompt_id)
        assert (work / "output" / "wan22_00001.mp4").is_file()
        faults = [{"mode": "step_delay", "seconds": 0.2}, {"mode": "crash"}]  # dies after step 1, 0.2 s in
        requests.post(f"{url}/__double__/faults", json=faults, timeout=5)
        prompt = recorded_prompt()
        prompt["14"]["inputs"]["noise_seed"] = 2
        requests.post(f"{url}/prompt", json={"prompt": prompt, "client_id": "child"}, timeout=10)
        assert proc.wait(20) == 1
        assert client.closed.wait(5)
        stdout, stderr = proc.communicate(timeout=5)
        assert f"To see the GUI go to: http://127.0.0.1:{port}" in stdout
        assert "got prompt" in stdout and "Prompt executed in" in stdout
        assert "crash fault" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
