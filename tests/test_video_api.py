"""Video-driven jobs through ``python handler.py --rp_serve_api``: task control (Fun-Control), the
video's length, size and sound. One worker with the ComfyUI double; each MP4 decoded with PyAV.

The double draws the control frame over the start image (tests/comfy_double/control_nodes.py), so
the answer shows what steered it: the video's own pictures with ``control: "video"``, their edges
with ``canny`` (none for flat frames).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from tests.harness import WorkerAPI, files_in, png_b64, running_worker
from tests.media_files import audio_file, video_file

SMALL = {"width": 64, "height": 64, "steps": 2}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decoded(body: dict) -> tuple[dict, list[np.ndarray], tuple[str, float] | None]:
    """The output, the video's frames (RGB), and its sound (codec, seconds) or None."""
    assert body["status"] == "COMPLETED", body.get("error")
    data = base64.b64decode(body["output"]["video"])
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.audio:
            return body["output"], frames, None
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return body["output"], frames, (stream.codec_context.name, samples / stream.codec_context.sample_rate)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerAPI]:
    with running_worker(tmp_path_factory.mktemp("video_api")) as worker:
        yield worker


CLIP = b64(video_file("mp4", 3.0, 30, (96, 64), audio=True))  # 3 s at 30 fps, lighter each frame, with a tone


def test_control_follows_the_video_for_as_long_as_it_lasts(api: WorkerAPI) -> None:
    output, frames, sound = decoded(api.runsync({"task": "control", "prompt": "x", "video": CLIP, "options": {**SMALL, "control": "video"}}))
    assert (output["task"], output["length"], output["frame_rate"], len(frames)) == ("control", 45, 16.0, 45)  # 48 frames at 16 fps → 4n+1
    brightness = [frame.mean() for frame in frames]
    assert brightness[-1] > brightness[0] + 20 and sound is None  # the video's pictures, no sound unless kept


def test_canny_gives_the_edges_of_the_video_not_its_pictures(api: WorkerAPI) -> None:
    _, frames, _ = decoded(api.runsync({"prompt": "x", "video": CLIP, "options": SMALL}))  # task and canny implied
    brightness = [frame.mean() for frame in frames]
    assert max(brightness) - min(brightness) < 3  # flat frames have no edges: the unchanging reference shows


def test_a_start_image_and_its_edges(api: WorkerAPI) -> None:
    output, frames, _ = decoded(api.runsync({"prompt": "x", "video": CLIP, "image": png_b64(64, 64, (220, 30, 30)), "options": SMALL}))
    assert output["task"] == "control" and frames[0][..., 0].mean() > 150 > frames[0][..., 2].mean()


def test_keep_audio_puts_the_videos_sound_on_the_output(api: WorkerAPI) -> None:
    output, frames, sound = decoded(api.runsync({"prompt": "x", "video": CLIP, "keep_audio": True, "options": SMALL}))
    assert sound is not None and sound[0] == "aac" and abs(sound[1] - len(frames) / 16) <= 1 / 16
    assert output["audio"]["codec"] == "aac"


def test_a_part_of_the_video_and_a_shorter_length(api: WorkerAPI) -> None:
    output, frames, _ = decoded(api.runsync({"prompt": "x", "video": CLIP, "video_start": 1.0, "video_end": 2.0, "options": SMALL}))
    assert output["length"] == len(frames) == 13  # 1 s at 16 fps: 16 frames → 13
    output, frames, _ = decoded(api.runsync({"prompt": "x", "video": CLIP, "options": {**SMALL, "length": 9}}))
    assert output["length"] == len(frames) == 9


def test_aspect_ratio_auto_takes_the_videos_shape(api: WorkerAPI) -> None:
    output, frames, _ = decoded(api.runsync({"prompt": "x", "video": CLIP, "options": {"resolution": "480p", "steps": 2}}))
    assert (output["width"], output["height"]) == (720, 480) == (frames[0].shape[1], frames[0].shape[0])


def test_the_4step_speed_runs_control(api: WorkerAPI) -> None:
    output, frames, _ = decoded(api.runsync({"prompt": "x", "video": CLIP, "speed": "4step", "options": SMALL}))
    assert output["speed"] == "4step" and len(frames) == 45


@pytest.mark.parametrize(
    ("job", "error"),
    [
        ({"options": {**SMALL, "length": 81}},
         "invalid_input: options.length: 81 frames need 81 frames of video at 16 fps, and the video gives 48 (3 s) (allowed: at most 45"),
        ({"keep_audio": True, "audio": b64(audio_file("wav", 1.0))},
         "invalid_input: keep_audio: true together with audio (allowed: one sound track: keep_audio or audio)"),
        ({"options": {**SMALL, "control": "depth"}}, 'invalid_input: options.control: "depth" is not one of the allowed values (allowed: canny, pose, video)'),
    ],
)  # fmt: skip
def test_what_does_not_fit_the_video_is_refused(api: WorkerAPI, job: dict, error: str) -> None:
    body = api.runsync({"prompt": "x", "video": CLIP, "options": SMALL, **job})
    assert body["status"] == "FAILED" and body["error"].startswith(error), body["error"]


def test_keep_audio_needs_a_video_with_sound(api: WorkerAPI) -> None:
    silent = api.runsync({"prompt": "x", "video": b64(video_file("mp4", 1.0)), "keep_audio": True, "options": SMALL})
    assert silent["error"] == (
        "invalid_input: keep_audio: the video has no sound track it could keep (allowed: true for a video with sound, else false)"
    )
    none = api.runsync({"prompt": "x", "image": png_b64(), "keep_audio": True})
    assert none["error"].startswith("invalid_input: keep_audio: true without a video")


def test_no_file_of_these_jobs_is_left_behind(api: WorkerAPI) -> None:
    work = Path(api.env["WORKER_DIR"])
    assert files_in(work / "input") == [] and files_in(work / "output") == []


# --- Task animate --------------------------------------------------------------------------------------

POSE = b64(video_file("mp4", 6.0, 16, (96, 64), audio=True))  # 96 frames at 16 fps: two segments (77 + 19)


def test_animate_moves_the_character_for_as_long_as_the_pose_video_in_segments(api: WorkerAPI) -> None:
    job = {"prompt": "x", "image": png_b64(64, 64, (220, 30, 30)), "pose_video": POSE, "options": SMALL}  # task implied
    output, frames, sound = decoded(api.runsync(job))
    assert (output["task"], output["mode"], output["length"], len(frames), output["frame_rate"]) == ("animate", "move", 96, 96, 16.0)
    assert frames[0][..., 0].mean() > 150 and sound is None  # the character (red) under the pose drawing


def test_animate_replace_with_the_scene_its_mask_a_face_and_the_sound(api: WorkerAPI) -> None:
    job = {"prompt": "x", "image": png_b64(), "pose_video": POSE, "face_video": POSE, "video": POSE, "mask_video": POSE,
           "keep_audio": True, "options": {**SMALL, "mode": "replace"}}  # fmt: skip
    output, frames, sound = decoded(api.runsync(job))
    assert (output["mode"], len(frames)) == ("replace", 96) and sound is not None and abs(sound[1] - 6.0) <= 1 / 16


@pytest.mark.parametrize(
    ("job", "error"),
    [
        ({"options": {**SMALL, "mode": "replace"}}, "invalid_input: video: missing, which mode 'replace' needs (allowed: video or video_url)"),
        ({"video": POSE}, "invalid_input: video: given with mode 'move' (allowed: only with mode 'replace' or in place of pose_video)"),
        ({"pose_video": None}, "invalid_input: pose_video: missing (allowed: pose_video or pose_video_url, or video or video_url to draw"),
        ({"face_video": b64(video_file("mp4", 2.0, 16))},
         "invalid_input: face_video: 32 frames at 16 fps, fewer than pose_video's 96 (allowed: as long as pose_video"),
        ({"options": {**SMALL, "mode": "dance"}}, 'invalid_input: options.mode: "dance" is not one of the allowed values (allowed: move, replace)'),
        ({"options": {**SMALL, "length": 33}}, "invalid_input: options.length: not used by task animate"),
    ],
)  # fmt: skip
def test_what_animate_cannot_use_is_refused(api: WorkerAPI, job: dict, error: str) -> None:
    job = {key: value for key, value in {"prompt": "x", "image": png_b64(), "pose_video": POSE, "options": SMALL, **job}.items() if value}
    body = api.runsync({"task": "animate", **job})
    assert body["status"] == "FAILED" and body["error"].startswith(error), body["error"]


def test_animate_is_bounded_by_max_animate_seconds(tmp_path: Path) -> None:
    with running_worker(tmp_path, MAX_ANIMATE_SECONDS="4", TASKS="animate") as worker:
        body = worker.runsync({"prompt": "x", "image": png_b64(), "pose_video": POSE, "options": SMALL})
    assert body["error"].startswith(
        "invalid_input: pose_video: 6 s is longer than task animate makes (allowed: at most 4 s (MAX_ANIMATE_SECONDS)"
    )


# --- Pose drawn from the video (SDPose inside the graph) ---------------------------------------------------

DANCE = b64(video_file("mp4", 2.0, 16, (96, 64), audio=True))  # 32 frames at 16 fps


def skeleton_pixels(frame: np.ndarray) -> int:
    """Pixels of the drawn pose: white (the double draws keypoints white on black, over the picture)."""
    return int((frame.min(axis=2) > 235).sum())


def test_animate_from_a_video_alone_draws_its_pose_and_face(api: WorkerAPI) -> None:
    """No pose_video: the graph draws the pose and cuts the face from ``video``; the answer says so."""
    job = {"task": "animate", "prompt": "x", "image": png_b64(64, 64, (220, 30, 30)), "video": DANCE, "options": SMALL}
    output, frames, sound = decoded(api.runsync(job))
    assert (output["mode"], output["control"], output["length"], len(frames)) == ("move", "pose", 32, 32)
    assert all(skeleton_pixels(frame) > 20 for frame in frames) and frames[0][..., 0].mean() > 150 and sound is None


def test_animate_replace_from_the_video_and_its_mask_keeps_the_sound(api: WorkerAPI) -> None:
    job = {"task": "animate", "prompt": "x", "image": png_b64(), "video": DANCE, "mask_video": DANCE, "keep_audio": True,
           "options": {**SMALL, "mode": "replace"}}  # fmt: skip
    output, frames, sound = decoded(api.runsync(job))
    assert (output["mode"], output["control"], len(frames)) == ("replace", "pose", 32) and sound is not None


def test_animate_replace_from_the_video_alone_tracks_the_person(api: WorkerAPI) -> None:
    """No mask_video: SAM 3.1 tracks the person in ``video`` (the double: what is brighter than the frame's
    mean), and the scene shows where the mask is 0; the answer says so."""
    job = {"task": "animate", "prompt": "x", "image": png_b64(64, 64, (220, 30, 30)), "video": DANCE, "options": {**SMALL, "mode": "replace"}}
    output, frames, _ = decoded(api.runsync(job))
    assert (output["mode"], output["control"], output["mask"], len(frames)) == ("replace", "pose", "sam3", 32)
    with_mask = {**job, "mask_video": DANCE}
    given, _, _ = decoded(api.runsync(with_mask))
    assert "mask" not in given


def test_a_given_pose_video_is_used_as_it_is(api: WorkerAPI) -> None:
    """With pose_video the worker draws nothing: no ``control`` in the answer, the given frames steer."""
    job = {"task": "animate", "prompt": "x", "image": png_b64(64, 64, (220, 30, 30)), "pose_video": DANCE, "options": SMALL}
    output, frames, _ = decoded(api.runsync(job))
    assert "control" not in output and output["length"] == 32 and skeleton_pixels(frames[0]) < 20  # a dark first frame


def test_control_pose_steers_with_the_pose_of_the_video(api: WorkerAPI) -> None:
    output, frames, _ = decoded(api.runsync({"task": "control", "prompt": "x", "video": DANCE, "options": {**SMALL, "control": "pose"}}))
    assert (output["control"], output["length"], len(frames)) == ("pose", 29, 29)  # 32 frames → 4n+1
    assert all(skeleton_pixels(frame) > 20 for frame in frames)
    _, canny_frames, _ = decoded(api.runsync({"task": "control", "prompt": "x", "video": DANCE, "options": {**SMALL, "control": "canny"}}))
    assert max(skeleton_pixels(frame) for frame in canny_frames) < 20  # flat frames have no edges


def test_the_pose_model_missing_is_named_with_the_jobs_that_need_it(tmp_path: Path) -> None:
    with running_worker(tmp_path, MODEL_SDPOSE="nowhere/sdpose.safetensors", TASKS="animate,control") as worker:
        from_video = worker.runsync({"task": "animate", "prompt": "x", "image": png_b64(), "video": DANCE, "options": SMALL})
        given = worker.runsync({"task": "animate", "prompt": "x", "image": png_b64(), "pose_video": DANCE, "options": SMALL})
        canny = worker.runsync({"task": "control", "prompt": "x", "video": DANCE, "options": SMALL})
    assert from_video["status"] == "FAILED" and from_video["error"].startswith("models_missing: task animate, mode move"), from_video["error"]
    assert "nowhere/sdpose.safetensors" in from_video["error"] and "MODEL_SDPOSE" in from_video["error"]
    assert given["status"] == canny["status"] == "COMPLETED"


def test_the_mask_model_missing_is_named_only_for_replace_without_mask_video(tmp_path: Path) -> None:
    with running_worker(tmp_path, MODEL_SAM3="nowhere/sam3.safetensors", TASKS="animate") as worker:
        job = {"task": "animate", "prompt": "x", "image": png_b64(), "video": DANCE, "options": {**SMALL, "mode": "replace"}}
        tracked = worker.runsync(job)
        masked = worker.runsync({**job, "mask_video": DANCE})
    assert tracked["status"] == "FAILED" and tracked["error"].startswith("models_missing: task animate, mode replace"), tracked["error"]
    assert "nowhere/sam3.safetensors" in tracked["error"] and "MODEL_SAM3" in tracked["error"]
    assert masked["status"] == "COMPLETED"
