"""The double's frame interpolation (ComfyUI's own ``FrameInterpolate``, and the pack's ``RIFE VFI`` it
replaced, which the VHS recordings feed on), VHS's other video formats and ComfyUI's ``lora key not
loaded`` lines, replayed against what the real ComfyUI v0.30.0 did (``tests/recordings/``: ``rife_*``,
``native_*``, ``vhs_<format>_<variant>.json``, ``lora_mismatch_*``; PROVENANCE.md says how they were made).

Each recorded prompt is posted after a warm-up prompt made of exactly the nodes the recording
served from ComfyUI's cache, so ``execution_cached`` and the message sequence can be compared as
recorded. Messages are compared with ``ws_canon`` (types, order, node ids, progress values, data
keys), ffmpeg's messages line by line with the made-up ``0x...`` addresses and the output folder
normalised, and in any order (ffmpeg's threads print in varying order from run to run).
"""

from __future__ import annotations

import copy
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import requests
from PIL import Image

from tests.comfy_double import ALL_MODEL_FILES, DoubleServer, create_model_files, recordings
from tests.comfy_double.graph import is_link
from tests.comfy_double.inprocess import safetensors_stand_in
from tests.comfy_double.interp_nodes import InterpolatedVideo
from tests.comfy_double.node_impls import FITTING_LORA_KEY_PREFIX
from tests.comfy_double.values import Images
from tests.test_comfy_double import DoubleClient, WsClient, _launch, free_port, post
from tests.test_comfy_double_tasks import recorded_messages, ws_canon
from worker.safetensors import parse_header

ROOT = Path(__file__).resolve().parent.parent
RIFE_RUNS = ["rife", "rife_x3", "rife_x4", "rife_one_frame"]
VHS_WRITTEN = [
    "vhs_h264-mp4_crf0",
    "vhs_h264-mp4_crf100",
    "vhs_h265-mp4_crf0",
    "vhs_h265-mp4_crf51",
    "vhs_h265-mp4_yuv420p",
    "vhs_h265-mp4_crf0_256px",
    "vhs_webm_crf0",
    "vhs_webm_crf63",
]
#: ffmpeg failed, but every frame fitted in the pipe: VHS reports success (file empty or missing).
VHS_SILENT_FAILURES = [
    "vhs_h265-mp4_crf52",
    "vhs_h265-mp4_crf100",
    "vhs_webm_crf64",
    "vhs_webm_crf100",
    "vhs_nvenc_h264-mp4",
    "vhs_nvenc_h264-mp4_crf",
]
#: ffmpeg failed and VHS's write broke: execution_error.
VHS_ERRORS = ["vhs_h265-mp4_crf100_256px", "vhs_webm_crf100_256px", "vhs_nvenc_h264-mp4_832x480x85"]
LORA_LINE = "lora key not loaded: "
#: The output node a warm-up prompt ends in (its own file name prefix).
WARM_UP_VIDEO = {
    "frame_rate": 8.0,
    "loop_count": 0,
    "format": "video/h264-mp4",
    "pix_fmt": "yuv420p",
    "crf": 19,
    "save_metadata": False,
    "trim_to_audio": False,
    "pingpong": False,
    "save_output": True,
}


# -- helpers ----------------------------------------------------------------------------------------


def example_png() -> bytes:
    """The input the recorded graphs load as ``example.png`` (any picture: RIFE's arithmetic and
    VHS's formats do not depend on it)."""
    y, x = np.mgrid[0:72, 0:96]
    pixels = np.stack([x * 255 // 95, y * 255 // 71, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def first_entry(name: str) -> dict[str, Any]:
    return next(iter(recordings.load_json(name).values()))


def recorded_prompt_of(name: str) -> dict[str, Any]:
    """The prompt a recording ran: from ``<name>_history.json``, or the ``vhs_*.json`` record."""
    if name.startswith("vhs_"):
        return copy.deepcopy(recordings.load_json(f"{name}.json")["prompt"])
    return copy.deepcopy(first_entry(f"{name}_history.json")["prompt"][2])


def recorded_ws_of(name: str) -> list[dict[str, Any]]:
    """Every message after the one sent on connection."""
    if name.startswith("vhs_"):
        return [m["msg"] for m in recordings.load_json(f"{name}.json")["ws"] if m.get("kind") == "text"][1:]
    return recorded_messages(name)[1:]


def recorded_history_of(name: str) -> dict[str, Any]:
    if name.startswith("vhs_"):
        return next(iter(recordings.load_json(f"{name}.json")["history"].values()))
    return first_entry(f"{name}_history.json")


def warm_up_prompt(prompt: dict[str, Any], cached: list[str]) -> dict[str, Any] | None:
    """The ``cached`` nodes of ``prompt``, each unconsumed one saved by a VHS node of its own."""
    if not cached:
        return None
    warm = {node_id: copy.deepcopy(prompt[node_id]) for node_id in cached}
    consumed = {v[0] for node_id in cached for v in prompt[node_id]["inputs"].values() if is_link(v)}
    for n, sink in enumerate(node_id for node_id in cached if node_id not in consumed):
        inputs = dict(WARM_UP_VIDEO, images=[sink, 0], filename_prefix=f"warmup{n}")
        warm[f"90{n}"] = {"class_type": "VHS_VideoCombine", "inputs": inputs}
    return warm


def unaddressed(text: str, output_dir: Path) -> list[str]:
    """ffmpeg's lines, sorted, with the context addresses and the output folder normalised."""
    text = re.sub(r"0x[0-9a-f]+", "0x?", text.replace(f"{output_dir}/", "/comfyui/output/"))
    return sorted(line for line in text.splitlines() if line)


def ffmpeg_lines(log: str) -> str:
    """What ffmpeg printed, without ComfyUI's own level-tagged lines."""
    return "".join(line for line in log.splitlines(keepends=True) if not line.startswith("\x1b["))


class Session(DoubleClient):
    """A websocket client of an in-process double with ``example.png`` uploaded."""

    def __init__(self, server: DoubleServer) -> None:
        super().__init__(server)
        response = requests.post(
            f"{server.url}/upload/image",
            files={"image": ("example.png", example_png(), "image/png")},
            data={"overwrite": "true"},
            timeout=10,
        )
        assert response.status_code == 200, response.text

    def run_recorded(self, name: str) -> tuple[str, list[dict[str, Any]]]:
        """``name``'s prompt after a warm-up that leaves in the cache what the recording found there."""
        prompt = recorded_prompt_of(name)
        cached = next(m for m in recorded_ws_of(name) if m["type"] == "execution_cached")["data"]["nodes"]
        warm = warm_up_prompt(prompt, cached)
        if warm is not None:
            self.run(warm)
        return self.run(prompt)

    def entry(self, prompt_id: str) -> dict[str, Any]:
        return self.server.history(prompt_id)[prompt_id]

    def outputs_like_recorded(self, name: str) -> dict[str, Any]:
        recorded = json.dumps(recorded_history_of(name)["outputs"])
        return json.loads(recorded.replace("/comfyui/output/", f"{self.server.output_dir}/"))

    def output_folder(self, prefix: str) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in sorted(self.server.output_dir.glob(prefix + "_0*"))}


@pytest.fixture
def double(comfy_double: DoubleServer, comfy_volume: Path) -> DoubleServer:
    create_model_files(comfy_volume / "models", ALL_MODEL_FILES)
    return comfy_double


@pytest.fixture
def session(double: DoubleServer) -> Iterator[Session]:
    session = Session(double)
    yield session
    session.ws.close()


def decoded(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        means = [frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0) for frame in container.decode(video=0)]
        return {
            "container": container.format.name,
            "codec": context.name,
            "codec_tag": context.codec_tag,
            "pix_fmt": context.pix_fmt,
            "profile": context.profile,
            "width": context.width,
            "height": context.height,
            "average_rate": str(stream.average_rate),
            "decoded_frames": len(means),
            "means": means,
        }


# -- RIFE VFI -----------------------------------------------------------------------------------------


def test_rife_and_the_image_nodes_are_served_as_recorded(double: DoubleServer) -> None:
    for file in ("object_info_rife_vfi.json", "object_info_image_nodes.json"):
        for class_type, info in recordings.load_json(file).items():
            served = requests.get(f"{double.url}/object_info/{class_type}", timeout=10).json()
            assert served == {class_type: info}


@pytest.mark.parametrize("name", RIFE_RUNS)
def test_recorded_rife_run_messages_history_and_frame_count(session: Session, name: str) -> None:
    prompt_id, produced = session.run_recorded(name)
    assert [ws_canon(m) for m in produced] == [ws_canon(m) for m in recorded_ws_of(name)]
    assert not any(m["type"] == "progress" and m["data"]["node"] == "6" for m in produced), "RIFE sends no progress"
    entry = session.entry(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] == session.outputs_like_recorded(name)
    video = decoded(session.server.output_dir / entry["outputs"]["7"]["gifs"][0]["filename"])
    want = recordings.load_json(f"{name}_{'mp4_probe' if name == 'rife' else 'probe'}.json")
    want = want if name == "rife" else next(iter(want.values()))
    assert video["decoded_frames"] == want["decoded_frames"] == {"rife": 5, "rife_x3": 7, "rife_x4": 9, "rife_one_frame": 1}[name]
    assert (video["codec"], video["width"], video["height"], video["average_rate"]) == ("h264", 64, 64, "8")


@pytest.mark.parametrize("multiplier", [2, 3, 4])
@pytest.mark.parametrize(("recording", "node", "output"), [("rife", "6", "7"), ("native_rife_x2", "7", "8")], ids=["pack", "native"])
def test_interpolation_keeps_the_source_frames_and_blends_between_them(
    session: Session, recording: str, node: str, output: str, multiplier: int
) -> None:
    """The pack's ``RIFE VFI`` and ComfyUI's ``FrameInterpolate`` alike: frames ``0, m, 2m`` are the
    sources (A, inverted A, A); in between, blends of the two neighbours: at x2 the mean of the two,
    as the recorded probes show."""
    prompt = recorded_prompt_of(recording)
    prompt[node]["inputs"]["multiplier"] = multiplier
    prompt_id, _ = session.run(prompt)
    gif = session.entry(prompt_id)["outputs"][output]["gifs"][0]
    means = decoded(session.server.output_dir / gif["filename"])["means"]
    assert len(means) == 2 * multiplier + 1
    a, b = means[0], means[multiplier]
    assert np.allclose(means[2 * multiplier], a, atol=3)
    assert np.allclose(a + b, 255, atol=6)  # B is A inverted
    for pair in range(2):
        left, right = means[pair * multiplier], means[(pair + 1) * multiplier]
        for step in range(1, multiplier):
            t = step / multiplier
            assert np.allclose(means[pair * multiplier + step], (1 - t) * left + t * right, atol=4)
    if recording == "rife" and multiplier == 2:
        recorded = recordings.load_json("rife_mp4_probe.json")["frame_mean_luma"]
        assert abs(recorded[1] - (recorded[0] + recorded[2]) / 2) < 3  # the real node: the mean too


@pytest.mark.parametrize(("sources", "multiplier"), [(n, m) for n in range(1, 5) for m in range(1, 5)])
def test_interpolated_video_arithmetic(sources: int, multiplier: int) -> None:
    frames = [np.full((2, 2, 3), 40 * i, dtype=np.uint8) for i in range(sources)]
    video = InterpolatedVideo(Images(frames), multiplier)
    assert video.count == (sources - 1) * multiplier + 1
    out = list(video.frames())
    assert len(out) == video.count
    for i, frame in enumerate(frames):
        assert out[i * multiplier] is frame  # unchanged
    for index, frame in enumerate(out):
        pair, step = divmod(index, multiplier)
        if step:
            assert int(frame[0, 0, 0]) == round(40 * pair + 40 * step / multiplier)


def test_rife_prints_what_the_pack_prints(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    """The stdout lines of x3, x4 and x2 on the recording server (they reached its log later,
    with ``lora_mismatch_server_log.json``'s stdout)."""
    capsys.readouterr()
    for multiplier in (3, 4, 2):
        prompt = recorded_prompt_of("rife")
        prompt["6"]["inputs"]["multiplier"] = multiplier
        session.run(prompt)
    want = recordings.load_json("lora_mismatch_server_log.json")["stdout"]
    printed = "".join(line for line in capsys.readouterr().out.splitlines(keepends=True) if line.startswith("Comfy-VFI"))
    assert printed == want


@pytest.mark.parametrize(("pack", "frames"), [("rife", 5), ("rife_x3", 7), ("rife_x4", 9), ("rife_one_frame", 1)])
def test_the_native_node_makes_the_packs_frames_from_the_same_input(pack: str, frames: int) -> None:
    """What decided the switch (docs/performance.md): on the same three frames (A, A inverted, A) the
    recorded ``FrameInterpolate`` and ``RIFE VFI`` give the same count, the same source frames, and
    (random weights both) in-betweens near the mean of their neighbours."""
    native = {"rife": "native_rife_x2"}.get(pack, f"native_{pack}")
    luma = pack == "rife"  # the first pack recording probed each frame's luma only
    pack_means, native_means = np.array(_probed(pack, luma)), np.array(_probed(native, luma))
    assert len(pack_means) == len(native_means) == frames
    step = max((frames - 1) // 2, 1)
    sources = range(0, frames, step)
    assert np.allclose(pack_means[sources], native_means[sources], atol=0.05)
    for index in set(range(frames)) - set(sources):
        left = index // step * step
        mean = (native_means[left] + native_means[left + step]) / 2
        assert np.allclose(native_means[index], mean, atol=8) and np.allclose(pack_means[index], mean, atol=8)


def _probed(name: str, luma: bool) -> list:
    """Each frame's mean luma or RGB in the recorded probe of run ``name``."""
    if name == "rife":
        return recordings.load_json("rife_mp4_probe.json")["frame_mean_luma"]
    (video,) = recordings.load_json(f"{name}_{'mp4_probe' if name.startswith('native_') else 'probe'}.json").values()
    video = video["probe"]["video"] if "probe" in video else video
    return video["frame_mean_luma" if luma else "frame_mean_rgb"]


@pytest.mark.parametrize(("model", "multiplier"), [("rife_v4.26.safetensors", 2), ("film_net_fp16.safetensors", 3), ("rife_v4.26.safetensors", 4)])
def test_the_interpolate_fragment_runs_between_vae_decode_and_the_video(session: Session, model: str, multiplier: int) -> None:
    """``workflows/fragments/interpolate.json`` (loader and interpolation) validates against the recorded
    definitions and turns the I2V graph's 5 decoded frames into ``4 * multiplier + 1``."""
    create_model_files(session.server.models_root, ["loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"])
    graph = copy.deepcopy(first_entry("i2v4step_history.json")["prompt"][2])
    graph["1"]["inputs"]["image"] = "example.png"
    loader, interpolate = copy.deepcopy(list(json.loads((ROOT / "workflows" / "fragments" / "interpolate.json").read_text()).values()))
    loader["inputs"]["model_name"] = model
    interpolate["inputs"].update(interp_model=["30", 0], images=["16", 0], multiplier=multiplier)
    graph["30"], graph["31"] = loader, interpolate
    graph["17"]["inputs"]["images"] = ["31", 0]
    response = post(session.server, graph, session.client_id)
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    messages = session.ws.wait_done(prompt_id)
    gif = session.entry(prompt_id)["outputs"]["17"]["gifs"][0]
    assert decoded(session.server.output_dir / gif["filename"])["decoded_frames"] == 4 * multiplier + 1
    made = [m["data"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "31"]
    assert made and made[-1]["value"] == made[-1]["max"] == 4 * (multiplier - 1)  # the progress the worker shows


# -- VHS formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VHS_WRITTEN)
def test_vhs_format_writes_what_the_recording_wrote(session: Session, name: str) -> None:
    record = recordings.load_json(f"{name}.json")
    prompt_id, produced = session.run_recorded(name)
    assert [ws_canon(m) for m in produced] == [ws_canon(m) for m in recorded_ws_of(name)]
    entry = session.entry(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] == session.outputs_like_recorded(name)
    gif = entry["outputs"]["7"]["gifs"][0]
    assert Path(gif["filename"]).suffix == {"video/webm": ".webm"}.get(gif["format"], ".mp4")
    video = decoded(session.server.output_dir / gif["filename"])
    want = record["files"][gif["filename"]]
    keys = ("container", "codec", "codec_tag", "pix_fmt", "profile", "width", "height", "average_rate", "decoded_frames")
    if want["codec"] == "h264":  # x264's profile follows crf (crf 0: High 4:4:4 Predictive)
        keys = tuple(k for k in keys if k != "profile")
    assert {k: video[k] for k in keys} == {k: want[k] for k in keys}
    assert sorted(session.output_folder(record["prompt"]["7"]["inputs"]["filename_prefix"])) == sorted(record["output_folder"])


@pytest.mark.parametrize("name", VHS_SILENT_FAILURES)
def test_vhs_failure_that_fits_the_pipe_is_a_success_with_ffmpegs_message_in_the_log(
    session: Session, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record = recordings.load_json(f"{name}.json")
    capsys.readouterr()
    prompt_id, produced = session.run_recorded(name)
    assert [ws_canon(m) for m in produced] == [ws_canon(m) for m in recorded_ws_of(name)]
    entry = session.entry(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] == session.outputs_like_recorded(name)  # a file that is empty or missing
    prefix = record["prompt"]["7"]["inputs"]["filename_prefix"]
    folder = session.output_folder(prefix)
    assert {k: v == 0 for k, v in folder.items()} == {k: v == 0 for k, v in record["output_folder"].items()}
    stderr = capsys.readouterr().err
    want = ffmpeg_lines(record["server_log"]["stderr"])
    assert unaddressed(stderr, session.server.output_dir) == unaddressed(want, session.server.output_dir)


@pytest.mark.parametrize("name", VHS_ERRORS)
def test_vhs_failure_at_a_real_size_is_an_execution_error_with_ffmpegs_message(session: Session, name: str) -> None:
    record = recordings.load_json(f"{name}.json")
    prompt_id, produced = session.run_recorded(name)
    assert [ws_canon(m) for m in produced] == [ws_canon(m) for m in recorded_ws_of(name)]
    error = next(m for m in produced if m["type"] == "execution_error")["data"]
    want = next(m for m in recorded_ws_of(name) if m["type"] == "execution_error")["data"]
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("7", "VHS_VideoCombine", "Exception")
    assert (want["node_id"], want["node_type"], want["exception_type"]) == ("7", "VHS_VideoCombine", "Exception")
    head = "An error occurred in the ffmpeg subprocess:\n"
    assert error["exception_message"].startswith(head) and want["exception_message"].startswith(head)
    assert error["exception_message"].endswith("\n\n") and want["exception_message"].endswith("\n\n")
    output_dir = session.server.output_dir
    assert unaddressed(error["exception_message"], output_dir) == unaddressed(want["exception_message"], output_dir)
    entry = session.entry(prompt_id)
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    prefix = record["prompt"]["7"]["inputs"]["filename_prefix"]
    folder = session.output_folder(prefix)
    assert {k: v == 0 for k, v in folder.items()} == {k: v == 0 for k, v in record["output_folder"].items()}


def test_nvenc_without_an_nvidia_encoder_names_the_missing_driver(session: Session) -> None:
    """On a machine without NVIDIA's driver (CI, this recording) ffmpeg's first line says so; with
    it, the double would encode with NVENC like VHS (PyAV has ``h264_nvenc``)."""
    record = recordings.load_json("vhs_nvenc_h264-mp4_832x480x85.json")
    error = next(m for m in record["ws"] if m.get("msg", {}).get("type") == "execution_error")["msg"]["data"]
    first = error["exception_message"].splitlines()[1]
    assert re.fullmatch(r"\[h264_nvenc @ 0x[0-9a-f]+\] Cannot load libcuda\.so\.1", first)
    prompt_id, produced = session.run_recorded("vhs_nvenc_h264-mp4_832x480x85")
    mine = next(m for m in produced if m["type"] == "execution_error")["data"]["exception_message"]
    assert re.fullmatch(r"\[h264_nvenc @ 0x[0-9a-f]+\] Cannot load libcuda\.so\.1", mine.splitlines()[1])


# -- a LoRA that does not fit ------------------------------------------------------------------------------


def recorded_lora_lines() -> list[str]:
    stderr = recordings.load_json("lora_mismatch_server_log.json")["stderr"]
    return [line for line in stderr.splitlines() if LORA_LINE in line]


def foreign_keys() -> list[str]:
    """The recorded mismatching keys, renamed so that the double's rule finds them foreign too
    (the recorded file's names start with ``diffusion_model.blocks.``: blocks the tiny model lacks)."""
    keys = [line.split(LORA_LINE, 1)[1] for line in recorded_lora_lines()]
    return [key.replace("diffusion_model.", "other_model.", 1) for key in keys]


def mismatch_lora(models_root: Path) -> list[str]:
    """``loras/style/mismatch.safetensors`` with :func:`foreign_keys`; returns its keys."""
    keys = foreign_keys()
    path = models_root / "loras" / "style" / "mismatch.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = [(key, () if key.endswith(".alpha") else (4, 4)) for key in keys]
    path.write_bytes(safetensors_stand_in("loras/style/mismatch.safetensors", tensors=shapes))
    return keys


def lora_graph() -> dict[str, Any]:
    """The recorded I2V graph with the LoRA that does not fit on the high-noise model (node 10)."""
    graph = recorded_prompt_of("lora_mismatch")
    assert graph["10"]["inputs"]["lora_name"] == "style/mismatch.safetensors"
    graph["11"]["inputs"]["lora_name"] = "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"
    return graph


def test_recorded_lora_lines_are_one_per_key_in_sorted_order() -> None:
    lines = recorded_lora_lines()
    keys = [line.split(LORA_LINE, 1)[1] for line in lines]
    assert len(keys) == 21 and keys == sorted(keys)
    assert {line.split(LORA_LINE, 1)[0] for line in lines} == {"\x1b[1m\x1b[33m[WARNING]\x1b[0m "}
    assert sum(key.endswith(".alpha") for key in keys) == 7  # every tensor counts, alpha too


def test_lora_that_does_not_fit_is_logged_key_by_key_and_nothing_else_shows(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    keys = mismatch_lora(session.server.models_root)
    caplog.set_level("INFO")
    prompt_id, produced = session.run_recorded("lora_mismatch")

    deadline = time.monotonic() + 5  # ComfyUI logs "Prompt executed" after the last message
    while sum(r.getMessage().startswith("Prompt executed") for r in caplog.records) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    logged = [r.getMessage() for r in caplog.records]
    lora = [m for m in logged if m.startswith(LORA_LINE)]
    assert lora == [LORA_LINE + key for key in keys]
    assert all(r.levelname == "WARNING" for r in caplog.records if r.getMessage().startswith(LORA_LINE))
    got = len(logged) - 1 - logged[::-1].index("got prompt")  # this prompt's (the warm-up's came first)
    done = max(i for i, m in enumerate(logged) if m.startswith("Prompt executed in"))
    assert got < logged.index(lora[0]) and logged.index(lora[-1]) < done

    # the websocket and history look like any successful run, as recorded
    assert session.entry(prompt_id)["status"]["status_str"] == recorded_history_of("lora_mismatch")["status"]["status_str"]
    assert session.entry(prompt_id)["outputs"] == session.outputs_like_recorded("lora_mismatch")
    # (how many progress messages a sampler sends depends on its speed: compare the rest)
    steady = [ws_canon(m) for m in produced if not m["type"].startswith("progress")]
    assert steady == [ws_canon(m) for m in recorded_ws_of("lora_mismatch") if not m["type"].startswith("progress")]
    assert "execution_error" not in {m["type"] for m in produced}


def test_fitting_lora_stand_ins_log_nothing(session: Session, caplog: pytest.LogCaptureFixture) -> None:
    """``create_model_files``' LoRA stand-ins fit (their names start with the prefix)."""
    for rel in ALL_MODEL_FILES:
        if rel.startswith("loras/"):
            header = parse_header(safetensors_stand_in(rel))
            assert header is not None and all(n.startswith(FITTING_LORA_KEY_PREFIX) for n in header.tensors)
    graph = lora_graph()
    graph["10"]["inputs"]["lora_name"] = "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"
    caplog.set_level("INFO")
    prompt_id, _ = session.run(graph)
    assert session.entry(prompt_id)["status"]["status_str"] == "success"
    assert not [r for r in caplog.records if LORA_LINE in r.getMessage()]


def test_child_process_writes_the_lora_lines_like_comfyui(tmp_path: Path) -> None:
    """As ComfyUI's child (the worker's way: stdout and stderr into one log): the lines are
    ComfyUI v0.30.0's, byte for byte, on stderr between ``got prompt`` and ``Prompt executed``."""
    volume = tmp_path / "volume"
    create_model_files(volume / "models", ALL_MODEL_FILES)
    keys = mismatch_lora(volume / "models")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(
        f"v:\n  base_path: {volume}\n  diffusion_models: models/diffusion_models\n"
        "  text_encoders: models/text_encoders\n  vae: models/vae\n  loras: models/loras\n"
    )
    work = tmp_path / "work"
    (work / "input").mkdir(parents=True)
    (work / "input" / "example.png").write_bytes(example_png())
    port = free_port()
    argv = [
        *("--listen", "127.0.0.1", "--port", str(port), "--extra-model-paths-config", str(config)),
        *("--input-directory", str(work / "input"), "--output-directory", str(work / "output")),
        *("--temp-directory", str(work / "temp"), "--disable-auto-launch", "--preview-method", "none", "--cpu"),
    ]
    proc = _launch(argv)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{url}/system_stats", timeout=1)
                break
            except requests.exceptions.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        client = WsClient(f"ws://127.0.0.1:{port}/ws?clientId=child")
        prompt_id = requests.post(f"{url}/prompt", json={"prompt": lora_graph(), "client_id": "child"}, timeout=10).json()[
            "prompt_id"
        ]
        client.wait_done(prompt_id)
        assert requests.get(f"{url}/history/{prompt_id}", timeout=5).json()[prompt_id]["status"]["status_str"] == "success"
        while not requests.get(f"{url}/__double__/state", timeout=5).json()["executions"]:  # logged "Prompt executed" too
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
    finally:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=10)
    lines = stderr.splitlines()
    tag = recorded_lora_lines()[0].split(LORA_LINE, 1)[0]
    mine = [line for line in lines if LORA_LINE in line]
    assert mine == [f"{tag}{LORA_LINE}{key}" for key in keys]
    assert LORA_LINE not in stdout
    got = next(i for i, line in enumerate(lines) if line.endswith("got prompt"))
    done = next(i for i, line in enumerate(lines) if "Prompt executed in" in line)
    assert got < lines.index(mine[0]) and lines.index(mine[-1]) < done
    recorded_done = next(
        line
        for line in recordings.load_json("lora_mismatch_server_log.json")["stderr"].splitlines()
        if "Prompt executed in" in line
    )
    pattern = re.escape(recorded_done).replace(r"67\.43", r"\d+\.\d\d")
    assert re.fullmatch(pattern, lines[done])


def test_the_recorded_runs_are_all_replayed() -> None:
    """Every ``vhs_*.json`` and RIFE run recorded is one of the cases above (``vhs_audio.json``, the
    sound cases, belongs to the media nodes)."""
    vhs = sorted(p.stem for p in recordings.RECORDINGS_DIR.glob("vhs_*.json") if p.stem != "vhs_audio")
    replayed = sorted(VHS_WRITTEN + VHS_SILENT_FAILURES + VHS_ERRORS + ["vhs_nvenc_h264-mp4_256px"])
    assert vhs == replayed
    assert sorted({p.name.rsplit("_ws.jsonl")[0] for p in recordings.RECORDINGS_DIR.glob("rife*_ws.jsonl")}) == sorted(RIFE_RUNS)


def test_between_the_recorded_sizes_the_outcome_depends_on_ffmpegs_timing(session: Session) -> None:
    """At 256x256x5 the real NVENC run was a success (ffmpeg drained the pipe before exiting) while
    libx265 and webm at the same size failed: the double, which cannot time ffmpeg, breaks the pipe
    once the frames exceed a pipe buffer (64 KiB), so it fails here."""
    record = recordings.load_json("vhs_nvenc_h264-mp4_256px.json")
    assert next(iter(record["history"].values()))["status"]["status_str"] == "success"
    prompt_id, produced = session.run_recorded("vhs_nvenc_h264-mp4_256px")
    assert session.entry(prompt_id)["status"]["status_str"] == "error"
    assert [m["data"]["value"] for m in produced if m["type"] == "progress"] == [1]
