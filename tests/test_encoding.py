"""The video as the user asks for it: interpolated with RIFE, encoded as H.264, H.265, VP9 WebM or NVENC.

Jobs run through the pipeline with the ComfyUI double (which encodes with PyAV as VHS does with
ffmpeg, and interpolates as the recorded RIFE VFI runs did); the MP4/WebM files are decoded.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import av
import pytest

from tests.harness import by_role, decode_mp4, filled_graph, png_b64
from worker import encoding
from worker.errors import InvalidInput
from worker.pipeline import generate_video

SMALL = {"width": 64, "height": 64, "length": 5, "seed": 2}


def _job(**options) -> dict:
    return {"prompt": "waves at dusk", "image": png_b64(), "options": {**SMALL, **options}}


def _probe(data: bytes) -> dict:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {"container": container.format.name, "codec": stream.codec_context.name, "frames": frames,
                "rate": float(stream.average_rate), "pix_fmt": stream.codec_context.pix_fmt}  # fmt: skip


def test_interpolation_sits_between_the_decoder_and_the_video_node() -> None:
    graph = filled_graph({**_job(interpolate=3, frame_rate=16), "return_last_frame": True})
    nodes, roles = by_role(graph), graph.roles
    assert nodes["interpolate"]["frames"] == [roles["decode"], 0] and nodes["interpolate"]["multiplier"] == 3
    assert nodes["video_output"]["images"] == [roles["interpolate"], 0] and nodes["video_output"]["frame_rate"] == 48.0
    assert nodes["last_frame"]["image"] == [roles["interpolate"], 0]  # the last frame of the video as encoded
    assert nodes["interpolate"]["ckpt_name"] == "rife49.pth"


def test_interpolate_2_at_16_fps_makes_the_natural_motion_recipe(make_runtime) -> None:
    runtime = make_runtime()
    progress: list[dict] = []
    out = generate_video(_job(interpolate=2, frame_rate=16), "rife", runtime, send_progress=progress.append)
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["frames"], video["rate"]) == (9, 32.0)
    assert (out["length"], out["frames"], out["interpolate"], out["frame_rate"]) == (5, 9, 2, 32.0)
    assert "interpolate" in [p["stage"] for p in progress]


def test_an_output_frame_rate_wins_over_the_multiplied_one(make_runtime) -> None:
    out = generate_video(_job(interpolate=2, frame_rate=24, output_frame_rate=30), "rate", make_runtime())
    assert decode_mp4(base64.b64decode(out["video"]))["rate"] == 30.0 and out["frame_rate"] == 30.0


@pytest.mark.parametrize(
    ("video_format", "crf", "container", "codec", "content_type", "suffix"),
    [("h265-mp4", 28, "mov,mp4,m4a,3gp,3g2,mj2", "hevc", "video/mp4", ".mp4"),
     ("webm", 40, "matroska,webm", "vp9", "video/webm", ".webm")],
)  # fmt: skip
def test_each_format_makes_its_file_and_says_its_type(make_runtime, video_format, crf, container, codec, content_type, suffix) -> None:
    out = generate_video(_job(video_format=video_format, crf=crf), f"fmt-{video_format}", make_runtime())
    probe = _probe(base64.b64decode(out["video"]))
    assert (probe["container"], probe["codec"], probe["frames"], probe["pix_fmt"]) == (container, codec, 5, "yuv420p")
    assert out["content_type"] == content_type and out["filename"].endswith(suffix)


def test_nvenc_without_an_encoder_falls_back_to_h264_with_a_warning(make_runtime, monkeypatch) -> None:
    monkeypatch.setattr(encoding, "nvenc_available", lambda: "ffmpeg cannot open the NVENC encoder (Cannot load libcuda.so.1)")
    out = generate_video(_job(video_format="nvenc_h264-mp4"), "nvenc", make_runtime())
    assert _probe(base64.b64decode(out["video"]))["codec"] == "h264"
    [warning] = out["warnings"]
    assert warning.startswith("options.video_format: nvenc_h264-mp4 is not available on this worker (ffmpeg cannot open")
    assert "encoded as h264-mp4 on the CPU instead" in warning


def test_the_nvenc_probe_is_a_real_encode_with_ffmpeg(tmp_path: Path, monkeypatch) -> None:
    for succeeds in (True, False):
        ffmpeg = tmp_path / ("ok" if succeeds else "bad") / "ffmpeg"
        ffmpeg.parent.mkdir()
        ffmpeg.write_text("#!/bin/sh\n" + ("exit 0\n" if succeeds else "echo '[h264_nvenc @ 0x1] Cannot load libcuda.so.1' >&2; exit 1\n"))
        ffmpeg.chmod(0o755)
        monkeypatch.setenv("PATH", f"{ffmpeg.parent}{os.pathsep}{os.environ['PATH']}")
        encoding.nvenc_available.cache_clear()
        expected = None if succeeds else "ffmpeg cannot open the NVENC encoder ([h264_nvenc @ 0x1] Cannot load libcuda.so.1)"
        assert encoding.nvenc_available() == expected
    encoding.nvenc_available.cache_clear()


def test_crf_follows_the_formats_range_and_nvenc_takes_none(make_runtime) -> None:
    runtime = make_runtime()
    with pytest.raises(InvalidInput, match=r"^options\.crf: 64 is out of range \(allowed: integers from 0 to 63 for webm"):
        generate_video(_job(video_format="webm", crf=64), "crf", runtime)
    with pytest.raises(InvalidInput, match=r"^options\.crf: 20 is not used by this video_format \(allowed: no crf with video_format nvenc_h264-mp4"):
        generate_video(_job(video_format="nvenc_h264-mp4", crf=20), "crf", runtime)
