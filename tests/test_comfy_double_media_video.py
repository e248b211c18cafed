"""The double's video inputs, Animate, Fun-Control and Canny, replayed against the real ComfyUI
v0.30.0 (``video_formats.json``, ``animate_*``, ``fun_control_*``; PROVENANCE.md), and the media
classes it serves (``object_info_*media*`` / ``object_info_audio_nodes.json``).

Replays work as in ``test_comfy_double_media.py``. The Animate and Fun-Control inputs of the shared
recordings (``media_pose.mp4``, ``media_face.mp4``) are not described beyond their use; any short
video stands in, since frame counts do not depend on it.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import requests

from tests.comfy_double import ALL_MODEL_FILES, DoubleServer, create_model_files, media, recordings
from tests.comfy_double.inprocess import safetensors_stand_in
from tests.comfy_double.node_defs import LIVE_LISTS
from tests.comfy_double.registry import NODE_FUNCTIONS
from tests.comfy_double.video_nodes import canny_edges
from tests.integration import media_inputs as m
from tests.integration.record_media import video_inputs
from tests.test_comfy_double import post
from tests.test_comfy_double_media import (
    INPUTS,
    Session,
    assert_replayed,
    error_of,
    per_node,
    recorded_history,
    recorded_probe,
    recorded_prompt,
    recorded_ws,
    same_probe,
    without_paths,
)

#: The recorded Animate inputs (``record_media.upload_animate_inputs``) and stand-ins for the shared ones.
VIDEOS = {
    "animate_pose_13.mp4": (13, 0),
    "animate_face_13.mp4": (13, 3),
    "animate_background_13.mp4": (13, 6),
    "animate_mask_13.mp4": (13, 9),
    "animate_pose_3.mp4": (3, 0),
    "media_pose.mp4": (5, 0),
    "media_face.mp4": (5, 3),  # VHS_LoadVideo's progress in animate_ws.jsonl: 5 frames
    "sdpose_clip_5.mp4": (5, 0),  # 96x64 (record_media.record_sdpose)
    "sam3_clip_3.mp4": (3, 0),  # 96x64 (record_media.record_sam3)
}
ANIMATE_RUNS = ["animate", "animate_2seg", "animate_replace", "animate_pose_short", "animate_pose_from_video", "animate_replace_from_video"]
VIDEO_CASES = recordings.load_json("video_formats.json")
REF_COLOUR = (200, 120, 40)  # media_ref.png


@functools.cache
def recorded_video_inputs() -> dict[str, bytes]:
    return video_inputs()


def video(name: str) -> bytes:
    count, shift = VIDEOS[name]
    return m.video_file("mp4", "libx264", count, 16, width=96 if name.startswith(("sdpose", "sam3")) else 64, shift=shift)


class VideoSession(Session):
    inputs = {**INPUTS, **{name: functools.partial(video, name) for name in VIDEOS}}


@pytest.fixture
def double(comfy_double: DoubleServer, comfy_volume: Path) -> DoubleServer:
    create_model_files(comfy_volume / "models", ALL_MODEL_FILES)
    return comfy_double


@pytest.fixture
def session(double: DoubleServer) -> Iterator[VideoSession]:
    session = VideoSession(double)
    yield session
    session.ws.close()


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# -- LoadVideo / GetVideoComponents / VHS_LoadVideo (video_formats.json) -------------------------------------


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_each_recorded_video_loads_or_fails_as_recorded(session: Session, case: str) -> None:
    """Every container loads with its frame count, rate, size and bit depth, ``audio`` None without a
    track; a text file or a cut MP4 fails in GetVideoComponents; a PNG is one frame at 25 fps;
    VHS_LoadVideo picks, resizes and reports ``video_info`` as VHS does."""
    record = VIDEO_CASES[case]
    loader = record["graph"]["1"]["inputs"]
    name = loader.get("file") or loader["video"]
    session.upload(name, recorded_video_inputs()[name])
    prompt_id, produced = session.run(record["graph"])
    assert sorted(msg["type"] for msg in produced) == sorted(record["ws_types"][1:])  # its outputs run in a set's order
    assert [msg["type"] for msg in produced][:4] == record["ws_types"][1:5]
    assert [msg["type"] for msg in produced][-3:] == record["ws_types"][-3:]
    outputs = session.entry(prompt_id)["outputs"]
    want = session.like_recorded(record["outputs"])
    for node_id, shown in want.items():
        if "text" in shown and shown["text"][0].startswith("{'waveform'"):  # str() of a tensor: its values left out
            head, tail = shown["text"][0].split("tensor(")[0], shown["text"][0].rsplit(")", 1)[1]
            assert outputs[node_id]["text"][0].startswith(head) and outputs[node_id]["text"][0].endswith(tail)
            outputs[node_id] = shown
    assert outputs == want
    if "execution_error" in record:
        error, recorded_error = error_of(produced), record["execution_error"]
        keys = ("node_id", "node_type", "exception_type", "executed")
        assert {k: error[k] for k in keys} == {k: recorded_error[k] for k in keys}
        assert without_paths(error["exception_message"], session.server) == recorded_error["exception_message"]
    for recorded in record["probes"].values():
        same_probe(session.output_probe(recorded["item"]), recorded["probe"])


# -- Animate ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ANIMATE_RUNS)
def test_recorded_animate_run_counts_frames_and_segments_as_recorded(session: Session, name: str) -> None:
    """``trim_latent`` 1, ``trim_image`` 0 then 5, ``video_frame_offset`` 5 / 9 then 13; two segments of
    9 make 13 frames; a 3-frame pose video for 5 frames is no error."""
    prompt_id, produced = session.replay(name)
    assert_replayed(recorded_prompt(name), produced, recorded_ws(name))
    entry = session.entry(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] == session.like_recorded(recorded_history(name)["outputs"])
    gif = next(output["gifs"][0] for output in entry["outputs"].values() if "gifs" in output)
    same_probe(session.output_probe(gif), recorded_probe(name))


def test_two_animate_segments_make_one_continuous_motion(session: Session) -> None:
    """Each frame is the reference with its pose frame drawn over it: segment 2 starts where
    segment 1's continued frames end, so the 13 frames follow the 13 pose frames."""
    prompt_id, _ = session.replay("animate_2seg")
    gif = session.entry(prompt_id)["outputs"]["23"]["gifs"][0]
    frames = frames_of(session.server.output_dir / gif["filename"])
    reference = media.common_upscale(np.full((64, 96, 3), REF_COLOUR, np.uint8), 64, 64, "area", "center")
    poses = m.frames(13)
    assert len(frames) == 13
    for frame, pose in zip(frames, poses, strict=True):
        assert np.abs(frame.astype(float) - np.maximum(reference, pose)).mean() < 6


def test_replace_mode_shows_the_background_outside_the_character_mask(session: Session) -> None:
    """The character (reference + pose) where the mask (``ImageToMask``: red) is 1, the background where it is 0."""
    prompt_id, _ = session.replay("animate_replace")
    gif = session.entry(prompt_id)["outputs"]["22"]["gifs"][0]
    frames = frames_of(session.server.output_dir / gif["filename"])
    reference = np.full((64, 64, 3), REF_COLOUR, np.uint8)
    sources = zip(m.frames(13), m.frames(13, shift=6), m.frames(13, shift=9), strict=True)
    assert len(frames) == 5
    for frame, (pose, background, mask) in zip(frames, sources, strict=False):
        weight = mask[:, :, :1] / 255.0
        expected = weight * np.maximum(reference, pose) + (1 - weight) * background
        assert np.abs(frame.astype(float) - expected).mean() < 8


# -- SDPose: pose and face from a video (sdpose_*) ------------------------------------------------------------

#: Values per OpenPose person part: (x, y, score) per point.
PERSON_PARTS = {"pose_keypoints_2d": 54, "foot_keypoints_2d": 18, "face_keypoints_2d": 210, "hand_right_keypoints_2d": 63,
                "hand_left_keypoints_2d": 63}  # fmt: skip


def shape_of(value: object) -> object:
    """A shown JSON value with every number replaced by its type: what random weights leave the same."""
    if isinstance(value, dict):
        return {key: shape_of(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape_of(item) for item in value]
    return type(value).__name__ if isinstance(value, (int, float)) else value


def test_the_pose_and_face_of_a_clip_come_out_as_recorded(session: Session) -> None:
    """One OpenPose frame per picture (canvas the picture's size, one person, every part), one box list per
    frame, a pose video the clip's size and 512x512 face crops, five frames each; the same messages."""
    name = "sdpose_pose_face"
    prompt_id, produced = session.replay(name)
    kinds = [{node: [message[:2] for message in messages] for node, messages in per_node(run)[0].items()} for run in (produced, recorded_ws(name))]
    assert kinds[0] == kinds[1] and per_node(produced)[1] == per_node(recorded_ws(name))[1]  # the shown values differ: random weights
    outputs, recorded = session.entry(prompt_id)["outputs"], recorded_history(name)["outputs"]
    keypoints, boxes = (json.loads(outputs[node]["text"][0]) for node in ("12", "13"))
    want_keypoints, want_boxes = (json.loads(recorded[node]["text"][0]) for node in ("12", "13"))
    assert shape_of(keypoints) == shape_of(want_keypoints) and len(keypoints) == 5
    assert {part: len(values) for part, values in keypoints[0]["people"][0].items()} == PERSON_PARTS
    assert [len(frame) for frame in boxes] == [len(frame) for frame in want_boxes] and set(boxes[0][0]) == set(want_boxes[0][0])
    for node in ("10", "11"):
        recorded_file = next(item["probe"] for key, item in recordings.load_json(f"{name}_mp4_probe.json").items() if key.startswith(f"{node}."))
        same_probe(session.output_probe(outputs[node]["gifs"][0]), recorded_file)


def test_a_missing_checkpoint_and_one_without_the_heatmap_head_fail_as_recorded(session: Session, comfy_volume: Path) -> None:
    (comfy_volume / "models" / "checkpoints" / "sam3.1_multiplex_fp16.safetensors").unlink()  # recorded before SAM 3.1 was there
    missing = recorded_prompt("sdpose_error_missing_checkpoint")
    session.provide_inputs(missing)
    response = post(session.server, missing, session.client_id)
    recorded = recordings.load_json("sdpose_error_missing_checkpoint_prompt_response.json")
    assert (response.status_code, response.json()) == (recorded["status"], recorded["body"])
    name = "sdpose_error_no_heatmap_head"
    rel = "checkpoints/sdpose_no_head.safetensors"  # written by the recorder after the run above
    (comfy_volume / "models" / rel).write_bytes(safetensors_stand_in(rel, [("model.diffusion_model.input_blocks.0.0.weight", (4, 4, 3, 3))]))
    _, produced = session.replay(name)
    error, recorded_error = error_of(produced), error_of(recorded_ws(name))
    keys = ("node_type", "exception_type", "exception_message")
    assert {k: error[k] for k in keys} == {k: recorded_error[k] for k in keys}


# -- Fun-Control and Canny ---------------------------------------------------------------------------------


def test_recorded_fun_control_run_and_its_frames_show_the_control_edges(session: Session) -> None:
    name = "fun_control"
    prompt_id, produced = session.replay(name)
    assert_replayed(recorded_prompt(name), produced, recorded_ws(name))
    entry = session.entry(prompt_id)
    assert entry["outputs"] == session.like_recorded(recorded_history(name)["outputs"])
    gif = entry["outputs"]["16"]["gifs"][0]
    same_probe(session.output_probe(gif), recorded_probe(name))
    frames = frames_of(session.server.output_dir / gif["filename"])
    edges = [canny_edges(source, 0.4, 0.8)[:, :, 0] > 0 for source in frames_of(session.server.input_dir / "media_pose.mp4")]
    assert any(e.any() for e in edges)  # some frames' colours differ too little for an edge
    for frame, edge in zip(frames, edges, strict=True):
        assert not edge.any() or frame[edge].mean() > 200  # the edges, white
        assert np.allclose(frame[~edge].reshape(-1, 3).mean(axis=0), REF_COLOUR, atol=12)  # the reference elsewhere


def test_canny_outlines_the_square_of_a_frame() -> None:
    """The recorder's frames hold a square of the inverted colour: edges on its border, none elsewhere."""
    frame = m.frames(13)[2]
    edges = canny_edges(frame, 0.4, 0.8)[:, :, 0] > 0
    rows, cols = np.nonzero(edges)
    assert 100 < len(rows) < 160
    assert rows.min() >= 14 and rows.max() <= 49 and cols.min() >= 14 and cols.max() <= 49
    assert not edges[20:44, 20:44].any()  # nothing inside the square
    strict = canny_edges(frame, 0.9, 2.2)[:, :, 0] > 0
    assert strict.sum() < edges.sum() and not (strict & ~edges).any()  # higher thresholds: fewer edges, the same ones
    assert not canny_edges(np.full((64, 64, 3), 90, np.uint8), 0.01, 0.02).any()  # a flat picture has none


# -- node definitions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("file", ["object_info_media_nodes.json", "object_info_audio_nodes.json", "object_info_more_media_nodes.json"])
def test_every_media_class_is_served_as_recorded(double: DoubleServer, file: str) -> None:
    """Each class as ``GET /object_info/{class}`` answered, its file and model lists read from the
    double's folders (their recorded contents differ from volume to volume)."""
    for class_type, info in recordings.load_json(file).items():
        served = requests.get(f"{double.url}/object_info/{class_type}", timeout=10).json()[class_type]
        for cls, field in LIVE_LISTS:
            if cls == class_type:
                spec, recorded = served["input"]["required"][field], info["input"]["required"][field]
                if spec[0] == "COMBO":
                    spec[1]["options"] = recorded[1]["options"]
                else:
                    spec[0] = recorded[0]
        assert served == info, class_type


def test_every_class_the_double_runs_has_a_recorded_definition() -> None:
    assert set(NODE_FUNCTIONS) <= set(recordings.object_info())


def test_a_changed_video_file_is_loaded_again(session: Session) -> None:
    """The video loaders' ``IS_CHANGED`` is the file's mtime: a new upload under the same name reruns them."""
    record = copy.deepcopy(VIDEO_CASES["LoadVideo h264_24fps.mp4"])
    session.upload("h264_24fps.mp4", recorded_video_inputs()["h264_24fps.mp4"])
    session.run(record["graph"])
    _, again = session.run(record["graph"])
    assert sorted(next(msg for msg in again if msg["type"] == "execution_cached")["data"]["nodes"]) == sorted(record["graph"])
    path = session.server.input_dir / "h264_24fps.mp4"
    path.write_bytes(recorded_video_inputs()["h264_30fps.mov"])
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    _, changed = session.run(record["graph"])
    assert "1" not in next(msg for msg in changed if msg["type"] == "execution_cached")["data"]["nodes"]
    shown = {msg["data"]["node"]: msg["data"]["output"]["text"][0] for msg in changed if msg["type"] == "executed" and msg["data"]["node"] != "10"}
    mov = VIDEO_CASES["LoadVideo h264_30fps.mov"]
    assert shown == {node_id: output["text"][0] for node_id, output in mov["outputs"].items() if "text" in output}
