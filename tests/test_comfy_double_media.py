"""The double's sound, S2V, native frame interpolation and EasyCache, replayed against the real
ComfyUI v0.30.0 (``tests/recordings/``, PROVENANCE.md: "Media features" and "Media recordings").

Each recorded graph is posted to a fresh in-process double after a warm-up prompt made of exactly
the nodes the recording served from ComfyUI's cache (their ends shown by ``PreviewAny``), so
``execution_cached`` and the message order can be compared as recorded (``ws_canon``: types, order,
node ids, progress values, data keys). Outputs are compared with history's, files with the
recording's PyAV probes (``tests/integration/real_server.probe``, the function that made them), and
the inputs are made by the recorder's own generators (``tests/integration/media_inputs``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.comfy_double import ALL_MODEL_FILES, DoubleServer, create_model_files, recordings, state_dicts
from tests.comfy_double.graph import is_link
from tests.comfy_double.inprocess import safetensors_stand_in
from tests.integration import media_inputs as m
from tests.integration.real_server import probe
from tests.integration.record_media import audio_inputs
from tests.test_comfy_double import DoubleClient, post
from tests.test_comfy_double_interp import example_png
from tests.test_comfy_double_tasks import ws_canon

#: The recordings' reference image and speech (``record_media.record_s2v``; the shared ``s2v_*`` used
#: ``media_speech_1s.wav``, one second of 16 kHz mono too).
INPUTS = {
    "media_ref.png": lambda: m.png(96, 64, (200, 120, 40)),
    "speech_1s_16k.wav": lambda: m.audio_file("wav", "pcm_s16le", 1, 16000, 1, pulse=4.0),
    "speech_2s_16k.wav": lambda: m.audio_file("wav", "pcm_s16le", 2, 16000, 1, pulse=4.0),
    "media_speech_1s.wav": lambda: m.audio_file("wav", "pcm_s16le", 1, 16000, 1, pulse=4.0),
    "png_renamed.wav": m.png,
    "example.png": example_png,
    "tone_2s_44k1_stereo.wav": lambda: m.audio_file("wav", "pcm_s16le", 2.0, 44100, 2),
    "tone_0.25s_44k1_stereo.wav": lambda: m.audio_file("wav", "pcm_s16le", 0.25, 44100, 2),
    "tone_1s_48k_stereo.wav": lambda: m.audio_file("wav", "pcm_s16le", 1.0, 48000, 2),
}
#: Model files only the error recordings use: an audio encoder of 4 random tensors, a wav2vec2
#: *base* (768 wide) and the RIFE pack's 4-block ``rife49.pth`` (its keys, ``encode.0`` / ``encode.1``).
ERROR_MODELS = {
    "audio_encoders/test_random_keys.safetensors": [(f"random.{i}", (4, 4)) for i in range(4)],
    "audio_encoders/test_wav2vec2_base_768.safetensors": [("encoder.layer_norm.bias", (768,))],
}
PACK_RIFE = [(f"block{i}.conv0.1.0.weight", (4, 4, 3, 3)) for i in range(4)] + [("encode.0.weight", (4, 3, 3, 3)), ("encode.1.weight", (4, 4, 3, 3))]
S2V_RUNS = ["s2v", "s2v_extend", "s2v_3seg", "s2v_3seg_short_audio", "s2v_3seg_partial_window"]
S2V_ERRORS = ["s2v_error_not_audio", "s2v_error_random_keys_encoder", "s2v_error_base_encoder"]
NATIVE_RUNS = [f"native_{model}_{run}" for model in ("rife", "film") for run in ("x2", "x3", "x4", "one_frame")]
EASYCACHE_RUNS = ["easycache_ti2v5b_off", "easycache_ti2v5b", "easycache_ti2v5b_verbose", "easycache_t2v"]


# -- helpers ----------------------------------------------------------------------------------------


def recorded_prompt(name: str) -> dict[str, Any]:
    return recordings.load_json(f"{name}_api.json")


def recorded_ws(name: str) -> list[dict[str, Any]]:
    """Every message after the one sent on connection."""
    return [e["msg"] for e in recordings.load_jsonl(f"{name}_ws.jsonl") if e.get("kind") == "text"][1:]


def recorded_history(name: str) -> dict[str, Any]:
    return next(iter(recordings.load_json(f"{name}_history.json").values()))


def recorded_probe(name: str) -> dict[str, Any]:
    """The probe of the run's one video (the shared recordings wrote ``{"probe": ...}``, the later ones one per file)."""
    probes = recordings.load_json(f"{name}_mp4_probe.json")
    return probes["probe"] if "probe" in probes else next(iter(probes.values()))["probe"]


#: Samples a Vorbis track may differ by: VHS's webm encodes it with libvorbis, which PyAV's FFmpeg
#: lacks; FFmpeg's own Vorbis encoder (the double's) ends a track on other block boundaries.
VORBIS_SLACK = 256


def same_probe(got: dict[str, Any], want: dict[str, Any]) -> None:
    """What a client sees of a file: picture size, format, rate and frame count, and the track."""
    video_keys = ("codec", "width", "height", "pix_fmt", "average_rate", "decoded_frames")
    assert {k: got["video"][k] for k in video_keys} == {k: want["video"][k] for k in video_keys}
    if want.get("audio") is None:
        assert "audio" not in got
        return
    audio_keys = ("codec", "sample_rate", "channels")
    assert {k: got["audio"][k] for k in audio_keys} == {k: want["audio"][k] for k in audio_keys}
    slack = VORBIS_SLACK if want["audio"]["codec"] == "vorbis" else 0
    assert abs(got["audio"]["decoded_samples"] - want["audio"]["decoded_samples"]) <= slack


def output_nodes(prompt: dict[str, Any]) -> list[str]:
    return [node_id for node_id, node in prompt.items() if recordings.object_info()[node["class_type"]].get("output_node")]


def per_node(messages: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], list[Any]]:
    """Each node's messages in order, and the prompt's own (``progress_state`` left out: it lists every node)."""
    nodes: dict[str, list[Any]] = {}
    prompt: list[Any] = []
    for message in messages:
        node = message["data"].get("node") if message["type"] in ("executing", "executed", "progress") else None
        if message["type"] != "progress_state":
            (nodes.setdefault(node, []) if node is not None else prompt).append(ws_canon(message))
    return nodes, prompt


def assert_replayed(prompt: dict[str, Any], produced: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> None:
    """The recorded messages, in the recorded order. ComfyUI keeps a prompt's output nodes in a set,
    so with several of them the order of independent branches varies from process to process: then
    each node's own messages are compared in order, and the prompt's."""
    if len(output_nodes(prompt)) == 1:
        assert [ws_canon(m) for m in produced] == [ws_canon(m) for m in recorded]
    else:
        assert per_node(produced) == per_node(recorded)


def error_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m["data"] for m in messages if m["type"] == "execution_error")


def without_paths(text: str, server: DoubleServer) -> str:
    """A message with the server's folders written as the recordings write them."""
    return text.replace(str(server.input_dir), "<work>/input").replace(str(server.output_dir), "<work>/output")


class Session(DoubleClient):
    """A websocket client of an in-process double; inputs are uploaded when a graph names them."""

    inputs: dict[str, Callable[[], bytes]] = INPUTS

    def upload(self, name: str, data: bytes) -> None:
        (self.server.input_dir / name).write_bytes(data)

    def provide_inputs(self, prompt: dict[str, Any]) -> None:
        for node in prompt.values():
            for value in node["inputs"].values():
                if isinstance(value, str) and value in self.inputs and not (self.server.input_dir / value).exists():
                    self.upload(value, self.inputs[value]())

    def warm_up(self, prompt: dict[str, Any], cached: list[str]) -> None:
        """Run the ``cached`` nodes of ``prompt``, each one nothing consumes shown by a ``PreviewAny``."""
        if not cached:
            return
        warm = {node_id: copy.deepcopy(prompt[node_id]) for node_id in cached}
        consumed = {v[0] for node_id in cached for v in prompt[node_id]["inputs"].values() if is_link(v)}
        for n, end in enumerate(node_id for node_id in cached if node_id not in consumed):
            warm[f"90{n}"] = {"class_type": "PreviewAny", "inputs": {"source": [end, 0]}}
        self.run(warm)

    def replay(self, name: str) -> tuple[str, list[dict[str, Any]]]:
        """``<name>_api.json`` after a warm-up that leaves cached what the recording found cached."""
        prompt = recorded_prompt(name)
        self.provide_inputs(prompt)
        cached = next(m for m in recorded_ws(name) if m["type"] == "execution_cached")["data"]["nodes"]
        self.warm_up(prompt, cached)
        return self.run(prompt)

    def entry(self, prompt_id: str) -> dict[str, Any]:
        return self.server.history(prompt_id)[prompt_id]

    def like_recorded(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Recorded history outputs with the recording machine's folders replaced by this server's."""
        text = json.dumps(outputs).replace("<work>/output/", f"{self.server.output_dir}/").replace("<path>/", f"{self.server.output_dir}/")
        return json.loads(text)

    def output_probe(self, item: dict[str, Any]) -> dict[str, Any]:
        return probe(self.server.output_dir / item["subfolder"] / item["filename"])


def add_error_models(models: Path) -> None:
    """The files only the error recordings load (the recorder wrote them just before those runs)."""
    for rel, tensors in ERROR_MODELS.items():
        (models / rel).write_bytes(safetensors_stand_in(rel, tensors))
    (models / "frame_interpolation" / "rife49_pack_layout.pth").write_bytes(state_dicts.torch_checkpoint(PACK_RIFE))


@pytest.fixture
def double(comfy_double: DoubleServer, comfy_volume: Path) -> DoubleServer:
    """``comfy_double`` with every model of the recorded graphs."""
    create_model_files(comfy_volume / "models", ALL_MODEL_FILES)
    return comfy_double


@pytest.fixture
def session(double: DoubleServer) -> Iterator[Session]:
    session = Session(double)
    yield session
    session.ws.close()


# -- S2V ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", S2V_RUNS)
def test_recorded_s2v_run_sends_the_recorded_messages_and_video(session: Session, name: str) -> None:
    """Segment chains decode ``4N - 3`` frames for ``N`` latent frames (21 for 3 x 5, 25 for 5, 5, 9)
    and VHS cuts or pads the track to the video, as recorded."""
    prompt_id, produced = session.replay(name)
    assert_replayed(recorded_prompt(name), produced, recorded_ws(name))
    entry = session.entry(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] == session.like_recorded(recorded_history(name)["outputs"])
    (item,) = next(iter(entry["outputs"].values()))["gifs"]
    same_probe(session.output_probe(item), recorded_probe(name))


@pytest.mark.parametrize("name", S2V_ERRORS)
def test_recorded_s2v_error_names_the_node_and_exception(session: Session, name: str) -> None:
    """A PNG named ``.wav`` fails in LoadAudio, an encoder of unknown keys in its loader, a wav2vec2
    base encoding at the sampler (13 hidden states where S2V weighs 25)."""
    add_error_models(session.server.models_root)
    prompt_id, produced = session.replay(name)
    assert_replayed(recorded_prompt(name), produced, recorded_ws(name))
    error, want = error_of(produced), error_of(recorded_ws(name))
    keys = ("node_id", "node_type", "exception_type", "exception_message")
    assert {k: error[k] for k in keys} == {k: want[k] for k in keys}
    assert sorted(error["executed"]) == sorted(want["executed"])  # a set in ComfyUI
    entry = session.entry(prompt_id)
    assert (entry["status"]["status_str"], entry["outputs"]) == ("error", {})


def test_missing_audio_encoder_is_refused_like_the_recording(session: Session) -> None:
    prompt = recorded_prompt("s2v_error_missing_encoder")
    session.provide_inputs(prompt)
    response = post(session.server, prompt, session.client_id)
    want = recordings.load_json("s2v_error_missing_encoder_prompt_response.json")
    assert response.status_code == want["status"] == 400
    assert response.json() == want["body"]  # value_not_in_list, naming the encoders of the folder


# -- LoadAudio / SaveAudio (audio_formats.json) ----------------------------------------------------------

AUDIO_CASES = recordings.load_json("audio_formats.json")["cases"]


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_each_recorded_audio_file_loads_or_fails_as_recorded(session: Session, case: str) -> None:
    """Every format keeps its rate, channels and length through LoadAudio -> SaveAudio (FLAC); a
    PNG named ``.wav`` and an MP3 cut to 100 bytes fail with FFmpeg's words; a missing file is a 400."""
    record = AUDIO_CASES[case]
    name = case.split(" ")[0]
    if "upload" in record:
        session.upload(name, audio_inputs()[name])
    if record["prompt_response"]["status"] != 200:
        response = post(session.server, record["graph"], session.client_id)
        assert (response.status_code, response.json()) == (400, record["prompt_response"]["body"])
        return
    prompt_id, produced = session.run(record["graph"])
    assert [m["type"] for m in produced] == record["ws_types"][1:]
    assert session.entry(prompt_id)["outputs"] == record["outputs"]
    if "execution_error" in record:
        error, want = error_of(produced), record["execution_error"]
        assert (error["node_type"], error["exception_type"]) == (want["node_type"], want["exception_type"])
        assert without_paths(error["exception_message"], session.server) == want["exception_message"]
    for key, recorded in record["probes"].items():
        got = session.output_probe(recorded["item"])
        audio_keys = ("container", "duration_s")
        assert {k: got[k] for k in audio_keys} == {k: recorded["probe"][k] for k in audio_keys}, key
        assert {k: v for k, v in got["audio"].items()} == recorded["probe"]["audio"], key


def test_load_audio_lists_every_audio_or_video_file_of_the_input_folder(session: Session) -> None:
    for name, data in audio_inputs().items():
        session.upload(name, data)
    listed = session.server.get_json("/object_info/LoadAudio")["LoadAudio"]["input"]["required"]["audio"]
    assert listed == recordings.load_json("audio_formats.json")["LoadAudio_audio_input_after_the_uploads"]


# -- VHS_VideoCombine with a track (vhs_audio.json) -------------------------------------------------------

VHS_AUDIO = recordings.load_json("vhs_audio.json")


@pytest.mark.parametrize("case", list(VHS_AUDIO))
def test_vhs_muxes_the_track_like_the_recording(session: Session, case: str) -> None:
    """Longer tracks are cut, shorter ones padded with silence (``trim_to_audio`` cuts the file to
    the track instead); webm carries Vorbis, mp4 AAC; every file VHS wrote, history shows the ``-audio`` one."""
    titles = list(VHS_AUDIO)
    before = titles.index(case) - 1
    for graph in [VHS_AUDIO[titles[before]]["graph"]] if before >= 0 else []:  # the recording ran the cases in order
        session.provide_inputs(graph)
        session.run(graph)
    record = VHS_AUDIO[case]
    session.provide_inputs(record["graph"])
    prompt_id, produced = session.run(record["graph"])
    assert [m["type"] for m in produced] == record["ws_types"][1:]
    assert session.entry(prompt_id)["outputs"] == session.like_recorded(record["outputs"])
    prefix = record["graph"]["3"]["inputs"]["filename_prefix"]
    written = {p.name: probe(p) for p in sorted(session.server.output_dir.glob(f"{prefix}_*")) if p.suffix != ".png"}
    assert sorted(written) == sorted(record["all_files_written"])
    for file, want in record["all_files_written"].items():
        same_probe(written[file], want)
        assert written[file]["container"] == want["container"]


# -- native frame interpolation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NATIVE_RUNS)
def test_recorded_native_interpolation_runs_like_the_recording(session: Session, name: str) -> None:
    """``(n - 1) * m + 1`` frames, progress per pair of frames (``max`` the in-between frames), the
    source frames unchanged at ``0, m, 2m``; at x2 the random-weight RIFE's middle frame is about
    the mean of its neighbours, as the double's blend is (random FILM makes dark green: not compared)."""
    prompt_id, produced = session.replay(name)
    assert_replayed(recorded_prompt(name), produced, recorded_ws(name))
    entry = session.entry(prompt_id)
    assert entry["outputs"] == session.like_recorded(recorded_history(name)["outputs"])
    item = entry["outputs"]["8"]["gifs"][0]
    got, want = probe(session.server.output_dir / item["filename"], frame_stats=True)["video"], recorded_probe(name)["video"]
    same_probe({"video": got}, {"video": want})
    multiplier = recorded_prompt(name)["7"]["inputs"]["multiplier"]
    for means in (got["frame_mean_rgb"], want["frame_mean_rgb"]):  # the input: A, A inverted, A
        sources = [np.array(means[i]) for i in range(0, len(means), multiplier)]
        assert all(np.allclose(source, sources[0] if i % 2 == 0 else 255 - sources[0], atol=4) for i, source in enumerate(sources))
        if name == "native_rife_x2":
            assert np.allclose(means[1], (sources[0] + sources[1]) / 2, atol=8)


def test_native_loader_refuses_the_packs_four_block_rife(session: Session) -> None:
    add_error_models(session.server.models_root)
    name = "native_rife_error_pack_checkpoint"
    _, produced = session.replay(name)
    assert_replayed(recorded_prompt(name), produced, recorded_ws(name))
    error, want = error_of(produced), error_of(recorded_ws(name))
    keys = ("node_id", "node_type", "exception_type", "exception_message", "current_inputs")
    assert {k: error[k] for k in keys} == {k: want[k] for k in keys}


# -- EasyCache ------------------------------------------------------------------------------------------

#: EasyCache's verbose lines about tensors (their shapes and measured rates), which the double does not write.
TENSOR_LINES = ("x_prev_subsampled:", "output_change_rate:", "approx_output_change_rate:")


def recorded_easycache_lines(name: str) -> list[str]:
    """EasyCache's lines of the run's log, without the level tag (tqdm's bars share lines with them)."""
    lines = [part for line in recordings.load_json("easycache_server_log.json")[name]["server_log"] for part in line.split("\r")]
    found = [part[part.index("[INFO] ") + 7 :] for part in lines if "[INFO] EasyCache" in part]
    return [line for line in found if not any(marker in line for marker in TENSOR_LINES)]


def shape(line: str) -> str:
    return re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", line)


@pytest.mark.parametrize("name", EASYCACHE_RUNS)
def test_easycache_logs_like_the_recording_and_nothing_else_shows(session: Session, name: str, caplog: pytest.LogCaptureFixture) -> None:
    """One ``enabled`` and one ``skipped N/M steps`` line per sampler (M its own steps), the
    verbose decisions in between; the websocket and history look like any run's. Which steps are
    skipped depends on the model: the double's rule gives the recorded counts, except the T2V
    low-noise expert's (6/10 against 5/10, see ``easycache.py``)."""
    caplog.set_level("INFO")
    prompt_id, produced = session.replay(name)
    steady = [ws_canon(m) for m in produced if m["type"] not in ("progress", "progress_state")]  # sampler timing varies
    assert steady == [ws_canon(m) for m in recorded_ws(name) if m["type"] not in ("progress", "progress_state")]
    finals = {m["data"]["node"]: m["data"]["max"] for m in produced if m["type"] == "progress"}
    assert finals == {m["data"]["node"]: m["data"]["max"] for m in recorded_ws(name) if m["type"] == "progress"}
    assert session.entry(prompt_id)["outputs"] == session.like_recorded(recorded_history(name)["outputs"])
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("EasyCache")]
    recorded = recorded_easycache_lines(name)
    assert sorted(shape(line) for line in logged) == sorted(shape(line) for line in recorded)  # which steps: the model's
    starts = [i for i, line in enumerate(logged) if " enabled - " in line]
    assert starts == [i for i, line in enumerate(recorded) if " enabled - " in line]
    documented = {"EasyCache - skipped 5/10 steps (2.00x speedup)."} if name == "easycache_t2v" else set()
    summaries = [line for line in recorded if " - skipped " in line and line not in documented]
    assert [line for line in logged if " - skipped " in line][: len(summaries)] == summaries
