"""Talking video and sound on any video, through ``python handler.py --rp_serve_api`` as RunPod runs it.

One worker with the ComfyUI double: each answer's MP4 is decoded with PyAV (frames, rate, the audio
stream's codec and length), and the worker's folders are empty afterwards.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from bench.common import textured_png_b64
from tests.harness import WorkerAPI, files_in, png_b64, running_worker
from tests.media_files import AUDIO_FORMATS, audio_file, video_file
from worker.pipeline import generate_video

SMALL = {"width": 64, "height": 64}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def probe(video: bytes) -> dict:
    """The video's frames and rate, and its audio stream's codec and seconds, decoded."""
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate)
    with av.open(io.BytesIO(video)) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        samples = sum(frame.samples for frame in container.decode(audio)) if audio else 0
        return {
            "frames": frames, "rate": rate, "seconds": frames / rate,
            "audio": (audio.codec_context.name, samples / audio.codec_context.sample_rate) if audio else None,
        }  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerAPI]:
    with running_worker(tmp_path_factory.mktemp("audio_api")) as worker:
        yield worker


def completed(api: WorkerAPI, job: dict) -> tuple[dict, dict]:
    body = api.runsync(job)
    assert body["status"] == "COMPLETED", body.get("error")
    return body["output"], probe(base64.b64decode(body["output"]["video"]))


def test_an_i2v_video_carries_its_music_cut_to_its_length(api: WorkerAPI) -> None:
    output, video = completed(api, {"prompt": "x", "image": png_b64(), "audio": b64(audio_file("mp3", 3.0, 44_100, 2)),
                                    "options": {**SMALL, "length": 17, "frame_rate": 16}})  # fmt: skip
    assert (video["frames"], video["rate"]) == (17, 16.0)
    codec, seconds = video["audio"]
    assert codec == "aac" and abs(seconds - video["seconds"]) <= 1 / 16  # equal within a frame
    assert output["audio"]["codec"] == "aac" and abs(output["audio"]["seconds"] - video["seconds"]) <= 1 / 16


@pytest.mark.parametrize("kind", list(AUDIO_FORMATS))
def test_every_audio_format_arrives_on_the_video(api: WorkerAPI, kind: str) -> None:
    _, video = completed(api, {"prompt": "x", "image": png_b64(), "audio": b64(audio_file(kind, 1.0)), "options": {**SMALL, "length": 9}})
    assert video["audio"] is not None and video["audio"][0] == "aac"


def test_a_short_track_is_padded_with_silence_and_webm_carries_it_too(api: WorkerAPI) -> None:
    output, video = completed(api, {"prompt": "x", "task": "t2v", "audio": b64(audio_file("wav", 0.2)),
                                    "options": {**SMALL, "length": 33, "frame_rate": 16, "video_format": "webm"}})  # fmt: skip
    assert output["content_type"] == "video/webm" and video["audio"][0] == "vorbis"
    assert abs(video["audio"][1] - video["seconds"]) <= 1 / 16


def test_fit_audio_makes_the_video_as_long_as_the_track(api: WorkerAPI) -> None:
    output, video = completed(api, {"prompt": "x", "image": png_b64(), "audio": b64(audio_file("flac", 4.0)), "audio_start": 1.0,
                                    "options": {**SMALL, "fit": "audio", "frame_rate": 16}})  # fmt: skip
    assert output["length"] == 49 and video["frames"] == 49  # 3 s at 16 fps: 48 frames, the next 4n+1
    assert abs(video["audio"][1] - video["seconds"]) <= 1 / 16


@pytest.mark.parametrize(("seconds", "segments"), [(1.0, 1), (6.0, 2), (12.0, 3)])
def test_s2v_follows_the_speech_in_segments(api: WorkerAPI, seconds: float, segments: int) -> None:
    output, video = completed(api, {"task": "s2v", "prompt": "a woman speaks", "image": png_b64(),
                                    "audio": b64(audio_file("wav", seconds, 16_000)), "options": {**SMALL, "steps": 2}})  # fmt: skip
    frames = round(seconds * 16)
    assert (output["length"], output["frame_rate"], video["frames"], video["rate"]) == (frames, 16.0, frames, 16.0)
    assert 80 * (segments - 1) < frames <= 80 * segments  # 80 frames to a segment, as many as its audio window
    assert video["audio"][0] == "aac" and abs(video["audio"][1] - seconds) <= 1 / 16 and output["audio"]["codec"] == "aac"


def test_s2v_holds_its_first_frame_for_the_three_frames_the_first_latent_frame_stands_for(api: WorkerAPI) -> None:
    """The double's frames pan; the first four must be one frame, so the lips meet the sound."""
    body = api.runsync({"task": "s2v", "prompt": "x", "image": textured_png_b64(320, 64, 60), "audio": b64(audio_file("wav", 2.0)),
                        "options": {"width": 320, "height": 64, "steps": 2}})  # fmt: skip
    with av.open(io.BytesIO(base64.b64decode(body["output"]["video"]))) as container:
        frames = [frame.to_ndarray(format="rgb24").astype(float) for frame in container.decode(video=0)]
    change = [abs(later - earlier).mean() for earlier, later in zip(frames, frames[1:], strict=False)]
    assert len(frames) == 32 and max(change[:3]) < 5 < min(change[3:6])  # held, then moving (the codec adds about 1)


def test_s2v_takes_the_speech_of_a_video_file_and_returns_the_last_frame(api: WorkerAPI) -> None:
    body = api.runsync({"task": "s2v", "prompt": "x", "image": png_b64(), "audio": b64(video_file("webm", 6.0, audio=True)),
                        "return_last_frame": True, "options": {**SMALL, "steps": 2}})  # fmt: skip
    assert body["status"] == "COMPLETED", body.get("error")
    assert base64.b64decode(body["output"]["last_frame"]).startswith(b"\x89PNG")
    assert probe(base64.b64decode(body["output"]["video"]))["frames"] == 96


def test_no_file_of_these_jobs_is_left_behind(api: WorkerAPI) -> None:
    work = Path(api.env["WORKER_DIR"])
    assert files_in(work / "input") == [] and files_in(work / "output") == []


def test_s2v_progress_says_which_segment_is_sampled(make_runtime) -> None:
    runtime = make_runtime()
    updates: list[dict] = []
    job = {"task": "s2v", "prompt": "x", "image": png_b64(), "audio": b64(audio_file("wav", 11.0)), "options": {**SMALL, "steps": 3}}
    generate_video(job, "progress", runtime, send_progress=updates.append)
    sampling = [u for u in updates if u["stage"] == "sampling"]
    assert {(u["segment"], u["segments"]) for u in sampling} == {(1, 3), (2, 3), (3, 3)}
    assert max(u["step"] for u in sampling) == 9 and all(u["steps"] == 9 for u in sampling)
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents) and percents[-1] < 100
