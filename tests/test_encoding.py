"""The video as the user asks for it: interpolated (RIFE or FILM), encoded as H.264, H.265, VP9 WebM or NVENC.

Jobs run through the pipeline with the ComfyUI double (which encodes with PyAV as VHS does with
ffmpeg, and interpolates as the recorded native RIFE and FILM runs did); the MP4/WebM files are decoded.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import av
import pytest

from comfy_bootstrap.errors import ModelsMissing
from tests.harness import by_role, decode_mp4, filled_graph, png_b64
from worker import encoding
from worker.errors import InvalidInput
from worker.pipeline import generate_video
from worker.settings import Settings

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
    assert nodes["interpolate"]["images"] == [roles["decode"], 0] and nodes["interpolate"]["multiplier"] == 3
    assert nodes["interpolate"]["interp_model"] == [roles["interpolation_model"], 0]
    assert nodes["interpolation_model"]["model_name"] == "rife_v4.26.safetensors"  # RIFE unless the job asks for FILM
    assert nodes["video_output"]["images"] == [roles["interpolate"], 0] and nodes["video_output"]["frame_rate"] == 48.0
    assert nodes["last_frame"]["image"] == [roles["interpolate"], 0]  # the last frame of the video as encoded


def test_the_job_chooses_the_interpolation_model_and_a_variable_renames_its_file() -> None:
    film = by_role(filled_graph(_job(interpolate=2, frame_rate=16, interpolation_model="film")))
    assert film["interpolation_model"]["model_name"] == "film_net_fp16.safetensors"
    env = {**os.environ, "MODEL_INTERPOLATION_RIFE": "mine/rife_v4.25.safetensors"}
    renamed = by_role(filled_graph(_job(interpolate=2, frame_rate=16), Settings.from_env(env)))
    assert renamed["interpolation_model"]["model_name"] == "mine/rife_v4.25.safetensors"
    assert not {"interpolate", "interpolation_model"} & set(by_role(filled_graph(_job())))


@pytest.mark.parametrize(
    ("options", "error"),
    [({"interpolation_model": "film"}, 'options.interpolation_model: given without options.interpolate (allowed: together with options.interpolate from 2 to 4)'),
     ({"interpolate": 1, "interpolation_model": "rife"}, 'options.interpolation_model: given without options.interpolate'),
     ({"interpolate": 2, "interpolation_model": "gimm"}, 'options.interpolation_model: "gimm" is not one of the allowed values (allowed: rife, film)'),
     ({"interpolate": 9, "interpolation_model": "film"}, "options.interpolate: 9 is greater than 4 (allowed: integers from 1 to 4)")],
)  # fmt: skip
def test_an_interpolation_model_needs_an_interpolation_and_is_rife_or_film(options: dict, error: str) -> None:
    from worker.request.parse import parse_request

    with pytest.raises(InvalidInput) as caught:
        parse_request(_job(frame_rate=16, **options), Settings())
    assert str(caught.value).startswith(error) and str(caught.value).count("; ") == 0


@pytest.mark.parametrize("model", ["rife", "film"])
def test_interpolate_2_at_16_fps_makes_the_natural_motion_recipe(make_runtime, model: str) -> None:
    runtime = make_runtime()
    progress: list[dict] = []
    out = generate_video(_job(interpolate=2, frame_rate=16, interpolation_model=model), model, runtime, send_progress=progress.append)
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["frames"], video["rate"]) == (9, 32.0)
    assert (out["length"], out["frames"], out["interpolate"], out["interpolation_model"], out["frame_rate"]) == (5, 9, 2, model, 32.0)
    stages = [p for p in progress if p["stage"] == "interpolate"]
    assert stages and stages[-1]["steps"] == 4 and 92.0 <= stages[-1]["percent"] <= 95.0  # 4 frames made between the 5


def test_an_interpolation_model_missing_from_the_volume_fails_the_job_that_needs_it(make_runtime) -> None:
    runtime = make_runtime()
    (Path(runtime.settings.comfy.volume_path) / "models" / "frame_interpolation" / "film_net_fp16.safetensors").unlink()
    with pytest.raises(ModelsMissing) as caught:
        generate_video(_job(interpolate=2, frame_rate=16, interpolation_model="film"), "film", runtime)
    assert str(caught.value).startswith("task i2v, interpolation_model film: 1 model file not found by ComfyUI")
    assert generate_video(_job(interpolate=2, frame_rate=16), "rife", runtime)["frames"] == 9  # RIFE's jobs still run


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
