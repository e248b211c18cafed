"""Video in: every container and codec a job may send is checked, cut and resampled by timestamp into
the H.264 MP4 ComfyUI loads, within its limits, its sound alongside; refusals are clear. Unit level:
worker/video.py, the video input kind (base64, data URIs, URLs) and its settings."""

from __future__ import annotations

import base64
import io
import math
import random
import threading
import time
import wave

import av
import numpy as np
import pytest

from comfy_bootstrap.errors import ExecutionInterrupted
from tests.file_server import FileServer
from tests.media_files import (
    audio_file,
    covered_audio,
    frameless_video,
    matroska_declaring,
    mp4_declaring,
    numbered_video,
    shown_indices,
    video_file,
)
from worker import video as video_module
from worker.errors import InvalidInput
from worker.inputs import KINDS
from worker.job_time import JobTime
from worker.request.model import MediaInput
from worker.settings import Limits, Settings
from worker.video import PreparedVideo, decode_video

LIMITS = Limits()


def decode(data: bytes, limits: Limits = LIMITS, **kwargs: float | None) -> PreparedVideo:
    return decode_video(data, field="video", limits=limits, **kwargs)  # type: ignore[arg-type]


def refusal(data: bytes, limits: Limits = LIMITS, field: str = "video", **kwargs: float | None) -> str:
    with pytest.raises(InvalidInput) as caught:
        decode_video(data, field=field, limits=limits, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{field}: ") and "(allowed: " in message and "\n" not in message and len(message) < 400
    return message


def probe(mp4: bytes) -> tuple[str, str, float, int, tuple[int, int]]:
    """What ComfyUI's LoadVideo would find: codec, pixel format, rate, frames decoded, size."""
    with av.open(io.BytesIO(mp4)) as opened:
        stream = opened.streams.video[0]
        frames = list(opened.decode(stream))
        return stream.codec_context.name, stream.codec_context.pix_fmt, float(stream.average_rate), len(frames), (frames[0].width, frames[0].height)


def wav_seconds(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav)) as reader:
        assert reader.getsampwidth() == 2
        return reader.getnframes() / reader.getframerate()


# --- Accepted files, resampled by time ------------------------------------------------------------------

#: (container, encoder) of every kind of file the recordings show ComfyUI's LoadVideo reading, and MPEG-4.
SOURCES = [("mp4", "libx264"), ("mp4", "libx265"), ("mp4", "mpeg4"), ("webm", "libvpx"), ("webm", "libvpx-vp9"),
           ("webm", "libsvtav1"), ("mov", "libx264"), ("matroska", "libx264")]  # fmt: skip


@pytest.mark.parametrize(("container", "codec"), SOURCES)
def test_every_container_and_codec_becomes_an_h264_mp4_at_the_rate_asked(container: str, codec: str) -> None:
    prepared = decode(numbered_video(container, 24, 24, codec=codec), rate=16)
    assert probe(prepared.mp4) == ("h264", "yuv420p", 16.0, 16, (64, 48))
    assert (prepared.frames, prepared.rate, prepared.width, prepared.height) == (16, 16.0, 64, 48)
    assert prepared.seconds == pytest.approx(1.0, abs=0.002)  # WebM counts whole milliseconds
    assert shown_indices(prepared.mp4, 24) == [math.floor(k * 24 / 16) for k in range(16)]  # 1.5 source frames a frame
    assert prepared.audio_wav is None and prepared.audio_seconds is None
    assert prepared.description.startswith(f"{prepared.source} 64×48, 24 fps, ") and "→ 16 frames at 16 fps, 64×48 H.264 MP4" in prepared.description


@pytest.mark.parametrize(("fps", "count", "rate"), [(30, 27, 16), (12, 24, 16), (16, 16, 16), (24, 12, 60)])
def test_each_frame_is_the_one_shown_at_its_time(fps: int, count: int, rate: int) -> None:
    """Frame k shows what the source shows at k / rate: 30 → 16 fps drops frames, 12 → 16 repeats them."""
    prepared = decode(numbered_video("mp4", count, fps), rate=rate)
    frames = math.ceil(count / fps * rate)
    assert prepared.frames == frames and probe(prepared.mp4)[2:4] == (rate, frames)
    assert shown_indices(prepared.mp4, count) == [math.floor(k * fps / rate) for k in range(frames)]


def test_a_variable_frame_rate_is_resampled_by_timestamp() -> None:
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.5, 0.9]  # the last frame lasts until 1.0 s (the average rate's frame)
    for container in ("mp4", "webm"):
        prepared = decode(numbered_video(container, times=times), rate=10)
        assert shown_indices(prepared.mp4, len(times)) == [0, 1, 2, 2, 3, 5, 5, 5, 5, 6]  # 4 (0.45 s) is never shown


def test_without_a_rate_the_source_rate_is_kept_up_to_max_frame_rate() -> None:
    data = numbered_video("webm", 30, 30)
    assert (decode(data).rate, decode(data).frames) == (30.0, 30)
    capped = decode(data, Limits(max_frame_rate=24))
    assert (capped.rate, capped.frames) == (24.0, 24) and shown_indices(capped.mp4, 30) == [math.floor(k * 30 / 24) for k in range(24)]


def test_start_and_end_select_the_frames_of_that_span() -> None:
    data = numbered_video("mp4", 32, 16)  # 2 s
    middle = decode(data, start=0.5, end=1.25, rate=16)
    assert (middle.frames, middle.seconds) == (12, 0.75) and shown_indices(middle.mp4, 32) == list(range(8, 20))
    tail = decode(data, start=1.5, rate=8)
    assert (tail.frames, tail.seconds) == (4, 0.5) and shown_indices(tail.mp4, 32) == [24, 26, 28, 30]
    assert "video 1.5–2 s → 4 frames at 8 fps" in tail.description


def test_a_phone_rotation_is_applied_and_odd_sizes_made_even() -> None:
    upright = decode(numbered_video("mp4", 4, 8, size=(64, 32), rotation=-90))
    assert (upright.width, upright.height) == (32, 64) and probe(upright.mp4)[4] == (32, 64)
    odd = decode(numbered_video("mp4", 4, 8, size=(65, 49)))
    assert (odd.width, odd.height) == (64, 48) and probe(odd.mp4)[4] == (64, 48)


@pytest.mark.parametrize(
    ("size", "cover", "expected"),
    [((128, 96), (64, 32), (64, 48)), ((128, 96), (48, 48), (64, 48)), ((96, 128), (64, 32), (64, 86)),
     ((128, 96), (256, 256), (128, 96)), ((64, 32), None, (64, 32)), ((65, 49), (32, 32), (44, 32))],
)  # fmt: skip
def test_frames_are_scaled_down_to_cover_the_jobs_frame_and_never_up(
    size: tuple[int, int], cover: tuple[int, int] | None, expected: tuple[int, int]
) -> None:
    prepared = decode(numbered_video("mp4", 4, 8, size=size), cover=cover)  # type: ignore[arg-type]
    assert (prepared.width, prepared.height) == expected == probe(prepared.mp4)[4]


def test_scaling_keeps_the_picture_whole_not_cropped() -> None:
    """Left half dark, right half light: after scaling both halves are still there, side by side."""
    pixels = np.zeros((96, 128, 3), dtype=np.uint8)
    pixels[:, 64:] = 230
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for _ in range(4):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    prepared = decode(buffer.getvalue(), cover=(32, 24))  # type: ignore[arg-type]
    with av.open(io.BytesIO(prepared.mp4)) as opened:
        frame = next(opened.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape == (24, 32, 3) and frame[:, :12].mean() < 40 and frame[:, 20:].mean() > 190


def test_the_sound_of_the_span_comes_along_as_wav() -> None:
    for container in ("mp4", "webm"):
        data = video_file(container, 2.0, 16, audio=True)
        whole = decode(data, rate=16)
        assert whole.audio_wav is not None and wav_seconds(whole.audio_wav) == pytest.approx(2.0, abs=0.05)
        cut = decode(data, start=0.5, end=1.25, rate=16)
        assert cut.audio_seconds == pytest.approx(0.75, abs=0.01) and wav_seconds(cut.audio_wav or b"") == pytest.approx(0.75, abs=0.01)
        assert ", sound 0.75 s as WAV 48000 Hz" in cut.description
    assert decode(video_file("mp4", 1.0)).audio_wav is None


def test_a_file_slightly_longer_than_allowed_is_cut_to_the_limit() -> None:
    prepared = decode(numbered_video("mp4", 20, 16), Limits(max_video_seconds=1.0), rate=16)  # 1.25 s
    assert (prepared.frames, prepared.seconds) == (16, 1.0)


# --- Refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "video: 0 bytes is not a video file (allowed: an MP4, MOV, WebM or Matroska file of H.264, H.265, VP8, VP9, AV1 or MPEG-4 video)"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "video: 108 bytes of PNG data is not an allowed video file (allowed: an MP4, MOV"),
        (b"just some text", "video: 14 bytes of data is not an allowed video file (allowed: "),
        (random.Random(19).randbytes(4000), "video: 4000 bytes of data is not an allowed video file (allowed: "),
        (audio_file("mp4", 1.0), "video: the MP4 file has no video stream (its streams: audio (aac)) (allowed: "),
        (audio_file("webm", 1.0), "video: the WebM file has no video stream (its streams: audio (opus)) (allowed: "),
        (covered_audio(), "video: the MP4 file has no video stream (its streams: audio (aac), cover picture (png)) (allowed: "),
        (frameless_video("webm"), "video: the WebM file holds no video frames (allowed: a video with at least one frame)"),
        (frameless_video("matroska"), "video: the Matroska file holds no video frames (allowed: "),
        (video_file("mp4", 1.0)[:600], "video: the MP4 data is truncated or corrupt ("),
        (b"\x1a\x45\xdf\xa3" + bytes(60), "video: the Matroska data is truncated or corrupt ("),
        (numbered_video("mp4", 4, 8, size=(1, 16)), "video: frames of 1×16 are too small (allowed: at least 2×2 pixels)"),
        (video_file("matroska", 0.5, codec="ffv1"), "video: the Matroska file's video is ffv1, which is not allowed (allowed: H.264, H.265, VP8"),
    ],
)
def test_what_is_not_a_usable_video_is_refused_clearly(data: bytes, what: str) -> None:
    assert refusal(data).startswith(what)


@pytest.mark.parametrize("hostile", [mp4_declaring(numbered_video("mp4", 16, 16), 36_000), matroska_declaring(numbered_video("webm", 16, 16), 36_000)])
def test_a_header_declaring_ten_hours_is_refused_before_decoding(hostile: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_module, "_timed_frames", lambda *args: pytest.fail("decoded"))
    message = refusal(hostile)
    assert " header declares 36000.0 s, 36000.0 s of it used, longer than allowed (allowed: at most 30 s (MAX_VIDEO_SECONDS); " \
        "cut it with video_start and video_end)" in message  # fmt: skip


def test_a_header_that_lies_is_caught_while_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_module, "_check_declared_length", lambda *args: None)
    hours = mp4_declaring(numbered_video("mp4", 16, 16), 36_000)  # one frame every 37.5 minutes
    assert refusal(hours).startswith("video: the video is longer than allowed after 0 s (allowed: at most 30 s (MAX_VIDEO_SECONDS)")
    assert refusal(numbered_video("mp4", 48, 16), Limits(max_video_frames=20)).startswith(
        "video: the video makes more than 20 frames at 16 fps after 0 s (allowed: at most 20 frames (MAX_VIDEO_FRAMES); cut it"
    )
    assert refusal(numbered_video("mp4", 16, 16), start=3.0) == "video: video_start 3 s is past the end of the video (1.0 s) (allowed: less than 1.0)"


def test_each_limit_is_named_in_its_refusal() -> None:
    data = numbered_video("mp4", 48, 16)  # 3 s of 64×48
    assert refusal(data, Limits(max_video_bytes=1000)) == f"video: {len(data)} bytes is too large (allowed: at most 1000 bytes (MAX_VIDEO_BYTES))"
    assert refusal(data, Limits(max_video_pixels=3000)) == (
        "video: frames of 64×48 (3072 pixels) are too large (allowed: at most 3000 pixels a frame (MAX_VIDEO_PIXELS))"
    )
    assert refusal(data, Limits(max_video_frames=40), rate=16) == (
        "video: 3.0 s at 16 fps makes 48 frames, more than allowed (allowed: at most 40 frames (MAX_VIDEO_FRAMES); "
        "cut it with video_start and video_end)"
    )
    assert refusal(data, Limits(max_video_seconds=2.0), field="pose_video_url").startswith(
        "pose_video_url: the MP4 header declares 3.0 s, 3.0 s of it used, longer than allowed (allowed: at most 2 s "
        "(MAX_VIDEO_SECONDS); cut it with pose_video_start and pose_video_end)"
    )
    assert decode(data, Limits(max_video_seconds=2.0, max_video_frames=40), start=1.0, end=2.5).frames == 24  # the cut is what counts


def test_a_span_that_is_not_in_the_video_is_refused() -> None:
    data = numbered_video("mp4", 32, 16)
    assert refusal(data, start=1.0, end=0.5) == "video: video_end 0.5 s is not after video_start 1 s (allowed: an end after the start)"
    assert refusal(data, start=3.0) == "video: video_start 3 s is past the end of the video (2.0 s) (allowed: less than 2.0)"


def test_decoding_is_bounded_in_wall_time_and_by_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    data = numbered_video("mp4", 16, 16)
    stop = threading.Event()
    stop.set()
    with pytest.raises(ExecutionInterrupted, match="cancelled while decoding video"):
        decode_video(data, field="video", limits=LIMITS, time_left=JobTime(stop=stop))
    monkeypatch.setattr(video_module, "DECODE_SECONDS", 0.0)
    assert refusal(data) == "video: decoding took longer than 0 s (allowed: a video that decodes in time)"


def test_a_30_second_video_is_refused_fast_and_a_small_one_decodes_fast() -> None:
    long_one = numbered_video("mp4", 31 * 16, 16, size=(32, 32))
    started = time.monotonic()
    refusal(long_one, Limits(max_video_seconds=30.0))
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    decode(numbered_video("webm", 32, 16, size=(320, 240)), rate=16)
    assert time.monotonic() - started < 2.0


# --- The input kind: base64 forms, URLs, settings ------------------------------------------------------


def prepare(given: MediaInput, limits: Limits = LIMITS):
    return KINDS["video"].prepare(given, limits, JobTime())


@pytest.mark.parametrize("media_type", ["mp4", "webm", "quicktime", "x-matroska"])
def test_base64_and_data_uris_of_video_types_become_an_mp4_with_its_sound_as_a_companion(media_type: str) -> None:
    data = video_file("mp4", 1.0, 16, audio=True)
    prepared = prepare(MediaInput("video", "video", b64=f"data:video/{media_type};base64," + base64.b64encode(data).decode(), rate=8))
    assert (prepared.kind, prepared.suffix, prepared.content_type, prepared.size) == ("video", ".mp4", "video/mp4", (64, 64))
    assert (prepared.frames, prepared.seconds) == (8, 1.0) and probe(prepared.data)[2:4] == (8.0, 8)
    assert prepared.description.startswith("video (base64): MP4 H.264 64×64, 16 fps")
    sound = prepared.companion
    assert sound is not None and (sound.field, sound.kind, sound.suffix, sound.content_type) == ("video_audio", "audio", ".wav", "audio/wav")
    assert sound.seconds == pytest.approx(1.0, abs=0.05) and wav_seconds(sound.data) == sound.seconds


def test_raw_base64_of_a_silent_video_has_no_companion() -> None:
    prepared = prepare(MediaInput("pose_video", "video", b64=base64.urlsafe_b64encode(video_file("webm", 0.5)).decode().rstrip("=")))
    assert prepared.field == "pose_video" and prepared.companion is None and prepared.frames == 8


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("data:image/png;base64,AAAA", 'video: data URI media type "image/png" is not allowed (allowed: data:video/<mp4|webm|quicktime|x-matroska>;base64,'),
        ("data:audio/mpeg;base64,AAAA", 'video: data URI media type "audio/mpeg" is not allowed (allowed: '),
        ("https://example.com/a.mp4", "video: a URL is not base64 (allowed: standard or URL-safe base64"),
        ("AAAA!", 'video: a base64 string of 5 characters is not valid base64: character "!" at position 4'),
    ],
)
def test_bad_base64_is_refused_before_decoding(value: str, what: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare(MediaInput("video", "video", b64=value))
    assert str(caught.value).startswith(what)


def test_a_base64_video_over_the_byte_cap_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidInput, match=r"^video: about 1500 bytes is too large \(allowed: at most 1000 bytes\)"):
        prepare(MediaInput("video", "video", b64="A" * 2000), Limits(max_video_bytes=1000))


def test_video_url_goes_through_the_guarded_fetcher() -> None:
    data = video_file("webm", 1.0, 16, audio=True)
    with FileServer({"/clip.webm": data}) as server:
        url = f"{server.url}/clip.webm?sig=secret"
        with pytest.raises(InvalidInput) as caught:
            prepare(MediaInput("video", "video", url=url))
        assert str(caught.value).startswith("video_url: ") and "127.0.0.1 is a loopback address" in str(caught.value)
        assert "secret" not in str(caught.value) and server.requests == []  # refused before connecting
        allowed = Limits(allow_private_image_urls=True)
        prepared = prepare(MediaInput("video", "video", url=url, start=0.25, rate=16), allowed)
        assert (prepared.frames, prepared.seconds) == (12, 0.75) and "sig" not in prepared.description
        assert prepared.companion is not None and prepared.companion.seconds == pytest.approx(0.75, abs=0.01)
        with pytest.raises(InvalidInput) as caught:
            prepare(MediaInput("video", "video", url=url, end=2.0, start=1.5), allowed)
        assert str(caught.value) == "video_url: video_start 1.5 s is past the end of the video (1.0 s) (allowed: less than 1.0)"
        with pytest.raises(InvalidInput) as caught:
            prepare(MediaInput("video", "video", url=url), Limits(allow_private_image_urls=True, max_video_bytes=1000))
        assert str(caught.value).startswith("video_url: ") and "1000" in str(caught.value)


def test_the_video_limits_are_read_from_the_environment() -> None:
    assert (LIMITS.max_video_bytes, LIMITS.max_video_seconds, LIMITS.max_video_frames, LIMITS.max_video_pixels) == (
        200 * 2**20, 30.0, 1800, 4_147_200,
    )  # fmt: skip
    env = {"MAX_VIDEO_BYTES": "1000000", "MAX_VIDEO_SECONDS": "12.5", "MAX_VIDEO_FRAMES": "400", "MAX_VIDEO_PIXELS": "921600"}
    limits = Settings.from_env(env).limits
    assert (limits.max_video_bytes, limits.max_video_seconds, limits.max_video_frames, limits.max_video_pixels) == (1_000_000, 12.5, 400, 921_600)
    assert KINDS["video"].timed and KINDS["video"].max_seconds is not None and KINDS["video"].max_seconds(limits) == 12.5


def test_a_damaged_sound_track_is_left_out_and_the_video_kept() -> None:
    """Found by tests/test_fuzz_video.py: the sound track's ``url`` box cut short leaves FFmpeg an audio
    stream without a codec; the video decodes, its sound is left out."""
    data = video_file("mp4", 0.5, 16, (32, 32), audio=True)
    at = data.rfind(b"\x00\x00\x00\x0curl ")
    damaged = data[:at] + b"\x80url " + data[at + 8 :]
    prepared = decode(damaged)
    assert prepared.frames == 8 and prepared.audio_wav is None and "its sound left out" in prepared.description
