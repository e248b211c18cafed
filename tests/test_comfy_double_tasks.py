"""The double runs the graphs of the next Wan 2.2 jobs as the recorded ComfyUI v0.30.0 did.

Recorded graphs (``tests/recordings/<name>_{prompt_response,ws,history,mp4_probe}``): ``t2v``
(T2V-A14B), ``ti2v5b_with_image`` / ``ti2v5b_no_image`` (TI2V-5B), ``i2v4step`` (4-step LoRAs),
``flf2v_lora_lastframe`` (first-last-frame, two extra LoRAs, last frame saved as a PNG) and
``flf2v_end_only``. Each recorded prompt is posted to the in-process double (``comfy_double``) after
the prompt that ran before it on the recording server, so the cache holds what it held there.
Websocket sequences are compared on type, order, node ids, progress values (with their JSON form:
``1`` vs ``1.0``) and data keys, never on timestamps or ids.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import requests
from PIL import Image

from tests.comfy_double import ALL_MODEL_FILES, DoubleServer, create_model_files, media, recordings
from tests.comfy_double.inprocess import safetensors_stand_in
from tests.comfy_double.node_defs import LIVE_LISTS
from tests.comfy_double.node_impls import image_from_batch
from tests.comfy_double.save_nodes import save_image
from tests.comfy_double.values import DecodedVideo, Images, NodeContext
from tests.harness import decode_mp4
from tests.test_comfy_double import DoubleClient, post
from worker.safetensors import parse_header

#: The LoRA paths of the recordings' volume (``object_info_flf2v_nodes.json``) that differ from the
#: test volume: the distill LoRA sits in ``loras/wan/`` here (the worker's layout).
RECORDED_DISTILL_LORA = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"
VOLUME_DISTILL_LORA = "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"
STYLE_LORAS = ("loras/style/example_style_high.safetensors", "loras/style/example_style_low.safetensors")

#: Each recorded graph and the one the recording server ran just before it (``number`` in the
#: ``*_prompt_response.json``: t2v 33, ti2v5b_with_image 34, ti2v5b_no_image 35, i2v4step 36;
#: flf2v_lora_lastframe 0 on a fresh server, flf2v_end_only 1). The predecessor of t2v (32) is not
#: recorded: an I2V graph with the same texts, CLIP and VAE, which i2v4step with another image is.
PREDECESSOR: dict[str, str | None] = {
    "t2v": "i2v4step",
    "ti2v5b_with_image": "t2v",
    "ti2v5b_no_image": "ti2v5b_with_image",
    "i2v4step": "ti2v5b_no_image",
    "flf2v_lora_lastframe": None,
    "flf2v_end_only": "flf2v_lora_lastframe",
}
GRAPHS = list(PREDECESSOR)

RED_BLUE = "start.png"  # left half red, right half blue
GREEN = "end.png"  # solid green
OTHER = "other.png"  # the warm-up I2V graph's image (so its LoadImage is not reused)


# -- helpers ----------------------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def red_blue(size: tuple[int, int] = (96, 72)) -> np.ndarray:
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (220, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 220)
    return pixels


def solid(color: tuple[int, int, int], size: tuple[int, int] = (80, 120)) -> np.ndarray:
    width, height = size
    return np.full((height, width, 3), color, dtype=np.uint8)


def upload(server: DoubleServer, name: str, pixels: np.ndarray) -> str:
    response = requests.post(
        f"{server.url}/upload/image",
        files={"image": (name, png_bytes(pixels), "image/png")},
        data={"overwrite": "true"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["name"]


def history_entry(name: str) -> dict[str, Any]:
    return next(iter(recordings.load_json(f"{name}_history.json").values()))


def recorded_graph(name: str, start: str = RED_BLUE, end: str | None = None) -> dict[str, Any]:
    """The recorded prompt of ``<name>_history.json``, rewritten to the test volume and uploads.

    ``LoadImage`` nodes read ``start`` (node 18, the flf2v end image: ``end``, by default the same
    file, as recorded); the distill LoRA is read from ``loras/wan/``.
    """
    prompt = copy.deepcopy(history_entry(name)["prompt"][2])
    for node_id, node in prompt.items():
        inputs = node["inputs"]
        if node["class_type"] == "LoadImage":
            inputs["image"] = (end or start) if node_id == "18" else start
        if inputs.get("lora_name") == RECORDED_DISTILL_LORA:
            inputs["lora_name"] = VOLUME_DISTILL_LORA
    return prompt


def ws_canon(message: dict[str, Any]) -> tuple[Any, ...]:
    kind, data = message["type"], message["data"]
    if kind == "status":
        return kind, data["status"]["exec_info"]["queue_remaining"], "sid" in data
    if kind == "progress_state":
        nodes = data["nodes"]
        return kind, tuple((k, v["state"], json.dumps(v["value"]), json.dumps(v["max"])) for k, v in nodes.items())
    if kind == "executing":
        return kind, data["node"], tuple(sorted(data))
    if kind == "progress":
        return kind, data["node"], json.dumps(data["value"]), json.dumps(data["max"]), tuple(sorted(data))
    if kind == "execution_cached":
        return kind, tuple(data["nodes"]), tuple(sorted(data))
    if kind == "executed":
        output = data["output"]
        shape = None if output is None else tuple((k, tuple(tuple(sorted(i)) for i in v)) for k, v in output.items())
        return kind, data["node"], tuple(sorted(data)), shape
    return kind, tuple(sorted(data))


def recorded_messages(name: str) -> list[dict[str, Any]]:
    return [e["msg"] for e in recordings.load_jsonl(f"{name}_ws.jsonl") if e.get("kind") == "text"]


def progress_max(messages: list[dict[str, Any]]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for message in messages:
        if message["type"] == "progress":
            found.setdefault(message["data"]["node"], set()).add(message["data"]["max"])
    return found


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def mean(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3).astype(float).mean(axis=0)


class Session(DoubleClient):
    """A websocket client of the double plus the files the recorded graphs read."""

    def __init__(self, server: DoubleServer) -> None:
        super().__init__(server)
        upload(server, RED_BLUE, red_blue())
        upload(server, GREEN, solid((30, 200, 40)))
        upload(server, OTHER, solid((200, 200, 30)))

    def warm_up(self, name: str, end: str | None = None) -> None:
        """Run the graph the recording server ran before ``name``, if any."""
        before = PREDECESSOR[name]
        if before is not None:
            self.run(recorded_graph(before, start=OTHER if name == "t2v" else RED_BLUE, end=end))

    def run_recorded(self, name: str) -> tuple[str, list[dict[str, Any]]]:
        """``name`` after its predecessor, as recorded."""
        self.warm_up(name)
        return self.run(recorded_graph(name))


@pytest.fixture
def double(comfy_double: DoubleServer, comfy_volume: Path) -> DoubleServer:
    """``comfy_double`` with every model of the recorded graphs and the two style LoRAs."""
    create_model_files(comfy_volume / "models", ALL_MODEL_FILES + STYLE_LORAS)
    return comfy_double


@pytest.fixture
def session(double: DoubleServer) -> Iterator[Session]:
    session = Session(double)
    yield session
    session.ws.close()


# -- the recorded runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRAPHS)
def test_recorded_graph_sends_the_recorded_messages(session: Session, name: str) -> None:
    session.warm_up(name)
    start = len(session.ws.messages)
    response = post(session.server, recorded_graph(name), session.client_id)
    recorded_response = recordings.load_json(f"{name}_prompt_response.json")
    assert response.status_code == recorded_response["status"] == 200
    assert response.headers["Content-Type"] == recorded_response["content_type"]
    assert list(response.json()) == list(recorded_response["body"]) and response.json()["node_errors"] == {}
    produced = session.ws.wait_done(response.json()["prompt_id"])[start:]
    recorded = recorded_messages(name)[1:]  # without the status sent on connection
    assert [ws_canon(m) for m in produced] == [ws_canon(m) for m in recorded]
    assert progress_max(produced) == progress_max(recorded)


@pytest.mark.parametrize("name", GRAPHS)
def test_recorded_graph_history_and_files(session: Session, name: str) -> None:
    prompt_id, _ = session.run_recorded(name)
    entry = session.server.history(prompt_id)[prompt_id]
    recorded = history_entry(name)
    assert list(entry) == list(recorded)
    _number, pid, prompt, extra, outputs = entry["prompt"]
    assert (pid, prompt) == (prompt_id, recorded_graph(name))
    assert list(extra) == list(recorded["prompt"][3])
    assert sorted(outputs) == sorted(recorded["prompt"][4])  # a set in ComfyUI: order varies by process
    assert entry["status"]["status_str"] == recorded["status"]["status_str"] == "success"
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in recorded["status"]["messages"]]
    assert entry["status"]["messages"][1][1]["nodes"] == recorded["status"]["messages"][1][1]["nodes"]
    assert entry["meta"] == recorded["meta"]
    output_dir = session.server.output_dir
    want_outputs = json.loads(json.dumps(recorded["outputs"]).replace("/comfyui/output/", f"{output_dir}/"))
    assert entry["outputs"] == want_outputs  # same keys, same file names and counters
    for node_output in entry["outputs"].values():
        for item in node_output.get("gifs", []) + node_output.get("images", []):
            assert (output_dir / item["subfolder"] / item["filename"]).is_file()


@pytest.mark.parametrize("name", GRAPHS)
def test_recorded_graph_video_matches_the_probe(session: Session, name: str) -> None:
    prompt_id, _ = session.run_recorded(name)
    gif = next(o["gifs"][0] for o in session.server.history(prompt_id)[prompt_id]["outputs"].values() if "gifs" in o)
    video = decode_mp4((session.server.output_dir / gif["filename"]).read_bytes())
    want = recordings.load_json(f"{name}_mp4_probe.json")["probe"]
    assert (video["codec"], video["width"], video["height"], video["pix_fmt"]) == (
        want["codec"],
        want["width"],
        want["height"],
        want["pix_fmt"],
    )
    assert video["frames"] == want["decoded_frames"]
    assert video["rate"] == float(want["average_rate"])
    assert sorted(video["metadata"]) == want["metadata_keys"]


@pytest.mark.parametrize("name", GRAPHS)
def test_repeating_a_recorded_graph_is_served_from_the_cache(session: Session, name: str) -> None:
    first_id, _ = session.run_recorded(name)
    files = sorted(p.name for p in session.server.output_dir.iterdir())
    again_id, produced = session.run(recorded_graph(name))
    output_nodes = history_entry(name)["prompt"][4]
    kinds = [m["type"] for m in produced if m["type"] != "status"]
    assert kinds == ["execution_start", "execution_cached"] + ["executed", "progress_state"] * len(output_nodes) + [
        "execution_success",
        "executing",
    ]
    cached = next(m for m in produced if m["type"] == "execution_cached")["data"]["nodes"]
    assert cached == list(recorded_graph(name))
    executed = {m["data"]["node"]: m["data"]["output"] for m in produced if m["type"] == "executed"}
    first = session.server.history(first_id)[first_id]["outputs"]
    assert executed == first == session.server.history(again_id)[again_id]["outputs"]
    assert sorted(p.name for p in session.server.output_dir.iterdir()) == files  # no new file


# -- what the frames show -----------------------------------------------------------------------------


def test_flf2v_video_goes_from_the_start_image_to_the_end_image(session: Session) -> None:
    prompt_id, _ = session.run(recorded_graph("flf2v_lora_lastframe", start=RED_BLUE, end=GREEN))
    outputs = session.server.history(prompt_id)[prompt_id]["outputs"]
    frames = video_frames(session.server.output_dir / outputs["17"]["gifs"][0]["filename"])
    first, middle, last = (f.astype(float) for f in (frames[0], frames[len(frames) // 2], frames[-1]))
    # fill / crop of the red|blue start image: red on the left, blue on the right
    assert np.allclose(mean(first[:, :24]), (220, 20, 20), atol=12)
    assert np.allclose(mean(first[:, -24:]), (20, 20, 220), atol=12)
    assert np.allclose(mean(last), (30, 200, 40), atol=12)  # the green end image
    assert 60 < mean(middle)[1] < 170  # half way: a cross-fade, neither image
    greens = [mean(f)[1] for f in frames]
    assert greens == sorted(greens)

    png = np.asarray(Image.open(session.server.output_dir / outputs["23"]["images"][0]["filename"]).convert("RGB"))
    assert png.shape == frames[-1].shape == (64, 64, 3)
    assert np.allclose(mean(png), mean(last), atol=6)  # the PNG is the video's last frame


def test_flf2v_end_only_starts_without_image_and_ends_on_the_end_image(session: Session) -> None:
    prompt_id, _ = session.run(recorded_graph("flf2v_end_only", end=GREEN))
    outputs = session.server.history(prompt_id)[prompt_id]["outputs"]
    frames = video_frames(session.server.output_dir / outputs["17"]["gifs"][0]["filename"])
    first, last = mean(frames[0]), mean(frames[-1])
    assert np.ptp(first) < 12  # the neutral gradient of a graph without a start image
    assert np.allclose(last, (30, 200, 40), atol=12)
    png = np.asarray(Image.open(session.server.output_dir / outputs["23"]["images"][0]["filename"]).convert("RGB"))
    assert png.shape == frames[-1].shape and np.allclose(mean(png), last, atol=6)


@pytest.mark.parametrize("name", ["ti2v5b_with_image", "i2v4step"])
def test_image_graphs_start_on_the_input_image(session: Session, name: str) -> None:
    prompt_id, _ = session.run(recorded_graph(name))
    outputs = session.server.history(prompt_id)[prompt_id]["outputs"]
    gif = next(o["gifs"][0] for o in outputs.values())
    first = video_frames(session.server.output_dir / gif["filename"])[0].astype(float)
    assert np.allclose(mean(first[:, :16]), (220, 20, 20), atol=12)
    assert np.allclose(mean(first[:, -16:]), (20, 20, 220), atol=12)


@pytest.mark.parametrize(
    ("size", "decoded"),
    [((72, 40), (64, 32)), ((64, 64), (64, 64)), ((100, 50), (96, 48))],
)
def test_wan22_latent_is_16x_and_empty_hunyuan_latent_8x(
    session: Session, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    """ComfyUI sizes Wan22ImageToVideoLatent's latent ``h//16 x w//16`` and EmptyHunyuanLatentVideo's
    ``h//8 x w//8``; ``step`` is not enforced (as the recorded width 70 showed), so the sizes round down."""
    width, height = size
    ti2v = recorded_graph("ti2v5b_with_image")
    ti2v["7"]["inputs"].update(width=width, height=height, length=9)
    t2v = recorded_graph("t2v")
    t2v["7"]["inputs"].update(width=width, height=height, length=9)
    for prompt, want in ((ti2v, decoded), (t2v, (width // 8 * 8, height // 8 * 8))):
        prompt_id, _ = session.run(prompt)
        gif = next(o["gifs"][0] for o in session.server.history(prompt_id)[prompt_id]["outputs"].values())
        video = decode_mp4((session.server.output_dir / gif["filename"]).read_bytes())
        assert (video["width"], video["height"], video["frames"]) == (*want, 9)


def test_wan22_latent_repeats_batch_size_only_with_a_start_image(session: Session) -> None:
    """``Wan22ImageToVideoLatent`` returns its one-item latent as is without a start image."""
    for name, frames in (("ti2v5b_with_image", 10), ("ti2v5b_no_image", 5)):
        prompt = recorded_graph(name)
        prompt["7"]["inputs"]["batch_size"] = 2
        prompt_id, _ = session.run(prompt)
        gif = next(o["gifs"][0] for o in session.server.history(prompt_id)[prompt_id]["outputs"].values())
        assert decode_mp4((session.server.output_dir / gif["filename"]).read_bytes())["frames"] == frames


def test_torch_compile_model_passes_the_model_through(session: Session) -> None:
    prompt = recorded_graph("t2v")
    prompt["20"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["8", 0], "backend": "inductor"}}
    prompt["10"]["inputs"]["model"] = ["20", 0]
    prompt_id, produced = session.run(prompt)
    assert session.server.history(prompt_id)[prompt_id]["status"]["status_str"] == "success"
    assert "20" in [m["data"]["node"] for m in produced if m["type"] == "executing"]

    prompt["20"]["inputs"]["backend"] = "tensorrt"
    response = post(session.server, prompt, session.client_id)
    assert response.status_code == 400
    error = response.json()["node_errors"]["20"]["errors"][0]
    assert (error["type"], error["details"]) == ("value_not_in_list", "backend: 'tensorrt' not in ['inductor', 'cudagraphs']")


# -- validation ---------------------------------------------------------------------------------------


def test_unknown_lora_is_rejected_like_the_recording(tmp_path: Path) -> None:
    """``lora_missing_error_prompt_response.json``: on the recorded volume (its four LoRAs)."""
    recorded_loras = recordings.load_json("object_info_flf2v_nodes.json")["LoraLoaderModelOnly"]["input"]["required"]
    loras = [f"loras/{name}" for name in recorded_loras["lora_name"][0]]
    models = [f for f in ALL_MODEL_FILES if not f.startswith("loras/")] + loras
    create_model_files(tmp_path / "models", models)
    with DoubleServer(models_root=tmp_path / "models", base_dir=tmp_path / "comfy") as server:
        upload(server, "harness_input.png", red_blue())
        prompt = copy.deepcopy(history_entry("flf2v_lora_lastframe")["prompt"][2])
        prompt["20"]["inputs"]["lora_name"] = "style/does_not_exist.safetensors"
        response = post(server, prompt, "x")
    want = recordings.load_json("lora_missing_error_prompt_response.json")
    assert response.status_code == want["status"] == 400
    assert response.headers["Content-Type"] == want["content_type"]
    body = response.json()
    assert sorted(body["node_errors"]["20"].pop("dependent_outputs")) == sorted(
        want["body"]["node_errors"]["20"].pop("dependent_outputs")
    )  # a set in ComfyUI
    assert body == want["body"]


# -- node definitions and model files -----------------------------------------------------------------


def test_object_info_serves_every_recorded_class(double: DoubleServer) -> None:
    served = requests.get(f"{double.url}/object_info", timeout=10).json()
    merged = recordings.object_info()
    recorded_classes = [c for name in recordings.OBJECT_INFO_FILES for c in recordings.load_json(name)]
    assert list(served) == list(merged) == list(dict.fromkeys(recorded_classes))
    for class_type, info in merged.items():
        got = copy.deepcopy(served[class_type])
        for cls, field in LIVE_LISTS:
            if cls == class_type:
                spec, recorded = got["input"]["required"][field], info["input"]["required"][field]
                if spec[0] == "COMBO":  # a v3 schema node: its list is the COMBO's "options"
                    spec[1]["options"] = recorded[1]["options"]
                else:
                    spec[0] = recorded[0]
        assert got == info, class_type
    required = {c: served[c]["input"]["required"] for c in ("UNETLoader", "VAELoader", "LoraLoaderModelOnly")}
    used = recordings.load_json("object_info_used_nodes.json")
    recorded_models = used["UNETLoader"]["input"]["required"]["unet_name"][0]
    media_models = {f.split("/", 1)[1] for f in ALL_MODEL_FILES if f.startswith("diffusion_models/") and ("s2v" in f or "animate" in f or "fun_control" in f)}
    assert required["UNETLoader"]["unet_name"][0] == sorted({*recorded_models, *media_models})  # the media models: recorded later
    assert required["VAELoader"]["vae_name"][0] == used["VAELoader"]["input"]["required"]["vae_name"][0]
    assert required["LoraLoaderModelOnly"]["lora_name"][0] == [
        "style/example_style_high.safetensors",
        "style/example_style_low.safetensors",
        VOLUME_DISTILL_LORA,
        "wan/WanAnimate_relight_lora_fp16.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
    ]


def test_a_class_recorded_twice_must_agree_apart_from_its_lists() -> None:
    used = recordings.load_json("object_info_used_nodes.json")["LoraLoaderModelOnly"]
    flf2v = recordings.load_json("object_info_flf2v_nodes.json")["LoraLoaderModelOnly"]
    recordings._check_same_definition("LoraLoaderModelOnly", used, flf2v, "object_info_flf2v_nodes.json")
    assert recordings.object_info()["LoraLoaderModelOnly"] == flf2v
    changed = copy.deepcopy(flf2v)
    changed["input"]["required"]["strength_model"][1]["max"] = 10.0
    with pytest.raises(ValueError, match="more than a COMBO list"):
        recordings._check_same_definition("LoraLoaderModelOnly", used, changed, "x.json")


@pytest.mark.parametrize("rel", ALL_MODEL_FILES)
def test_model_stand_ins_are_valid_safetensors(tmp_path: Path, rel: str) -> None:
    (path,) = create_model_files(tmp_path, [rel])
    data = path.read_bytes()
    assert data == safetensors_stand_in(rel)
    header = parse_header(data)  # the safetensors library's rules
    assert header is not None and header.file_bytes == len(data)
    assert header.header_bytes % 8 == 0 and data[8 : 8 + header.header_bytes].rstrip(b" ").endswith(b"}")  # JSON, space-padded
    assert {dtype for dtype, _ in header.tensors.values()} == {"F16"}
    names = sorted(header.tensors)
    if rel.startswith("loras/"):
        assert len(names) == 2 and names[0].endswith("lora_down.weight") and names[1].endswith("lora_up.weight")
    elif rel.startswith("frame_interpolation/") and "film" not in rel:  # the keys a 5-block RIFE is recognised by
        assert names == sorted(["encode.cnn3.weight", *(f"blocks.{i}.conv0.1.0.weight" for i in range(5))])
    elif rel.startswith("checkpoints/sam3"):  # the keys ComfyUI's detection tells SAM 3.1 by
        assert "detector.backbone.vision_backbone.propagation_convs.0.conv_1x1.weight" in names
    elif rel.startswith("checkpoints/"):  # SDPose: an SD UNet with the heatmap head ComfyUI builds it with
        assert "model.diffusion_model.heatmap_head.conv_layers.0.weight" in names
    else:
        assert len(names) == 1


# -- ImageFromBatch and SaveImage ---------------------------------------------------------------------


def _context(server: DoubleServer) -> NodeContext:
    return NodeContext(
        node_id="1",
        class_type="x",
        prompt={},
        extra_data={},
        folders=server.folders,
        catalog=server.app.catalog,
        progress=lambda *a, **k: None,
    )


@pytest.mark.parametrize(
    ("batch_index", "length", "of_5", "of_10"),
    [
        (-1, 1, [4], [9]),
        (0, 1, [0], [0]),
        (-2, 5, [3, 4], [8, 9]),
        (2, 2, [2, 3], [2, 3]),
        (99, 1, [4], [9]),
        (-99, 2, [0, 1], [0, 1]),
    ],
)
def test_image_from_batch_picks_like_comfyui(
    double: DoubleServer, batch_index: int, length: int, of_5: list[int], of_10: list[int]
) -> None:
    """Negative ``batch_index`` counts from the end; index and length are clamped to the batch
    (``object_info_flf2v_nodes.json``: -16384..16384), on images and on VAEDecode's lazy output."""
    frames = [np.full((4, 4, 3), 10 * i, dtype=np.uint8) for i in range(5)]
    (images,), _ = image_from_batch(_context(double), Images(frames), batch_index, length)
    assert [int(f[0, 0, 0]) for f in images.frames] == [10 * i for i in of_5]
    video = DecodedVideo(media.FramePlan(frames[0], 5, frames[4]), batch=2)  # 2 x 5 frames
    (picked,), _ = image_from_batch(_context(double), video, batch_index, length)
    every = list(video.frames())
    assert len(picked.frames) == len(of_10)
    assert all(np.array_equal(got, every[i]) for got, i in zip(picked.frames, of_10, strict=True))


def test_save_image_names_files_like_comfyui(double: DoubleServer) -> None:
    output = double.output_dir
    (output / "last_00007.mp4").touch()  # VHS's naming counts for ComfyUI's counter too
    (output / "last_abc.png").touch()
    frames = [np.full((8, 6, 3), 10 * i, dtype=np.uint8) for i in range(2)]
    (_,), ui = save_image(_context(double), Images(frames), "last", prompt={"1": {}})
    assert ui == {
        "images": [
            {"filename": "last_00008_.png", "subfolder": "", "type": "output"},
            {"filename": "last_00009_.png", "subfolder": "", "type": "output"},
        ]
    }
    (_,), ui = save_image(_context(double), Images(frames[:1]), "jobs/%width%x%height%/frame")
    assert ui == {"images": [{"filename": "frame_00001_.png", "subfolder": "jobs/6x8", "type": "output"}]}
    with Image.open(output / "jobs" / "6x8" / "frame_00001_.png") as png:
        assert png.size == (6, 8)
    with Image.open(output / "last_00009_.png") as png:
        assert json.loads(png.text["prompt"]) == {"1": {}} and np.asarray(png)[0, 0, 0] == 10


def test_save_image_refuses_to_leave_the_output_folder(double: DoubleServer) -> None:
    """``folder_paths.get_save_image_path`` (v0.30.0): a bare Exception with this message."""
    frames = [np.zeros((8, 8, 3), dtype=np.uint8)]
    with pytest.raises(Exception, match=r"^\*\*\*\* ERROR: Saving image outside the output folder is not allowed\.") as info:
        save_image(_context(double), Images(frames), "../escape/last")
    assert str(info.value).splitlines()[1:] == [
        f" full_output_folder: {double.output_dir.parent / 'escape'}",
        f"         output_dir: {double.output_dir}",
    ]
    assert not (double.output_dir.parent / "escape").exists()


def test_disable_metadata_keeps_the_prompt_out_of_saved_images(tmp_path: Path) -> None:
    """ComfyUI's SaveImage writes PNG text chunks only without ``--disable-metadata``."""
    create_model_files(tmp_path / "models", ALL_MODEL_FILES + STYLE_LORAS)
    with DoubleServer(models_root=tmp_path / "models", base_dir=tmp_path / "comfy", disable_metadata=True) as server:
        assert server.get_json("/system_stats")["system"]["argv"][-1] == "--disable-metadata"
        session = Session(server)
        try:
            prompt_id, _ = session.run(recorded_graph("flf2v_lora_lastframe", end=GREEN))
        finally:
            session.ws.close()
        png_name = server.history(prompt_id)[prompt_id]["outputs"]["23"]["images"][0]["filename"]
        with Image.open(server.output_dir / png_name) as png:
            assert png.text == {}
        with Image.open(server.output_dir / "wan22_00001.png") as workflow_png:  # VHS ignores the flag
            assert "prompt" in workflow_png.text


def test_sampler_faults_fire_at_the_ksampler_of_the_ti2v_graph(session: Session) -> None:
    """The default ``runtime_error`` hits the sampler, ``KSampler`` here; ``step_delay`` reports every step."""
    session.server.add_faults({"mode": "step_delay", "seconds": 0.01})
    _, produced = session.run(recorded_graph("ti2v5b_no_image"))
    steps = [(m["data"]["node"], m["data"]["value"], m["data"]["max"]) for m in produced if m["type"] == "progress"]
    assert [s for s in steps if s[0] == "9"] == [("9", v, 6) for v in range(1, 7)]

    session.server.add_faults({"mode": "runtime_error"})
    prompt = recorded_graph("ti2v5b_no_image")
    prompt["9"]["inputs"]["seed"] = 7
    prompt_id, produced = session.run(prompt)
    error = next(m for m in produced if m["type"] == "execution_error")["data"]
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("9", "KSampler", "torch.OutOfMemoryError")
    assert session.server.history(prompt_id)[prompt_id]["status"]["status_str"] == "error"
