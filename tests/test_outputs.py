"""Outputs: VHS's and SaveImage's recorded history entries, the payload limit, and cleanup that stays in its folders."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from comfy_bootstrap.errors import OutputMissing
from tests.recorded import history_entry
from worker.delivery import Artifact, Delivery
from worker.delivery.inline import InlineDelivery
from worker.delivery.s3 import S3Delivery
from worker.errors import OutputTooLarge
from worker.outputs import OutputFile, find_image, find_videos, remove_job_files
from worker.settings import Settings

S3_ENV = {"BUCKET_NAME": "b", "BUCKET_ACCESS_KEY_ID": "k", "BUCKET_SECRET_ACCESS_KEY": "s"}


def _inline(limit: int, *, s3: bool) -> InlineDelivery:
    """The base64 provider of a worker with (or without) S3 output, with its advice for large files."""
    env = {"MAX_RESPONSE_BYTES": str(limit), **(S3_ENV if s3 else {})}
    provider = Delivery(Settings.from_env(env).delivery, "auto").providers["base64"]
    assert isinstance(provider, InlineDelivery)
    return provider

MP4 = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 10


def test_finds_the_mp4_vhs_reported_in_recorded_history() -> None:
    outputs = history_entry("e2e_history.json")["outputs"]
    [video] = find_videos(outputs, "17")
    assert video == OutputFile("wan22_00008.mp4", "", "output", ("wan22_00008.png",))


def test_finds_the_png_saveimage_reported_in_recorded_history() -> None:
    outputs = history_entry("flf2v_lora_lastframe_history.json")["outputs"]
    assert find_image(outputs, "23") == OutputFile("wan22_last_00001_.png", "", "output")
    with pytest.raises(OutputMissing, match=r"image node \(17\) reported no image"):
        find_image(outputs, "17")


def test_no_mp4_in_outputs_is_a_clear_error() -> None:
    with pytest.raises(OutputMissing, match=r"reported no video"):
        find_videos({"17": {"gifs": [{"filename": "x.png"}]}}, "17")
    with pytest.raises(OutputMissing, match=r"video node \(17\)"):
        find_videos({}, "17")


def test_inline_delivery_roundtrips_under_the_limit() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"p" * 100
    fields = _inline(10_000, s3=False).deliver(
        "job", [Artifact("video", "v.mp4", MP4, "video/mp4"), Artifact("last_frame", "f.png", png, "image/png")]
    )
    assert base64.b64decode(fields["video"]) == MP4 and base64.b64decode(fields["last_frame"]) == png


def test_inline_delivery_refuses_an_answer_over_the_payload_limit_and_says_what_to_do() -> None:
    data = b"x" * 7_600_000  # 10.1 MB as base64
    with pytest.raises(OutputTooLarge) as err:
        _inline(10_000_000, s3=False).deliver("job", [Artifact("video", "v.mp4", data, "video/mp4")])
    text = str(err.value)
    assert text.startswith("the video is 7.6 MB") and "MAX_RESPONSE_BYTES" in text and "options.length" in text
    assert "configure S3 output" in text


def test_the_last_frame_counts_towards_the_limit() -> None:
    video = Artifact("video", "v.mp4", b"x" * 7_000_000, "video/mp4")  # 9.33 MB as base64: fits alone
    frame = Artifact("last_frame", "f.png", b"y" * 600_000, "image/png")
    limit = 10_000_000
    assert _inline(limit, s3=True).deliver("job", [video])
    with pytest.raises(OutputTooLarge, match=r"^the video and last frame are 7\.6 MB.*output_mode \"s3\""):
        _inline(limit, s3=True).deliver("job", [video, frame])


def test_the_output_mode_is_chosen_once_from_the_job_or_the_worker_default() -> None:
    without, with_s3 = Settings(), Settings.from_env(S3_ENV)  # OUTPUT_MODE=auto
    assert isinstance(Delivery(without.delivery, "auto").choose(None), InlineDelivery)
    assert isinstance(Delivery(with_s3.delivery, "auto").choose(None), S3Delivery)
    assert isinstance(Delivery(with_s3.delivery, "auto").choose("base64"), InlineDelivery)
    assert isinstance(Delivery(with_s3.delivery, "base64").choose(None), InlineDelivery)
    assert Delivery(with_s3.delivery, "auto").unavailable == {}
    assert Delivery(without.delivery, "auto").unavailable == {
        "s3": "S3 output is not configured (the operator sets BUCKET_NAME (or the bucket as the path of "
        "BUCKET_ENDPOINT_URL), BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY)"
    }


def test_cleanup_removes_images_video_and_png_but_nothing_outside(tmp_path: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    (out / "sub").mkdir(parents=True)
    inp.mkdir()
    (inp / "job_image.png").write_bytes(b"i")
    (inp / "job_end_image.png").write_bytes(b"e")
    (out / "sub" / "v_00001.mp4").write_bytes(b"v")
    (out / "sub" / "v_00001.png").write_bytes(b"p")
    (out / "v_last_00001_.png").write_bytes(b"l")
    (out / "other_00001.mp4").write_bytes(b"keep")
    outside = tmp_path / "secret.txt"
    outside.write_text("keep")
    files = [
        OutputFile("v_00001.mp4", "sub", "output", ("v_00001.png",)),
        OutputFile("v_last_00001_.png"),
        OutputFile("secret.txt", ".."),
    ]
    removed = remove_job_files(inp, out, ["job_image.png", "job_end_image.png"], files)
    assert removed == 5
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["other_00001.mp4", "secret.txt"]


def test_the_jobs_own_folders_and_files_go_whole_and_nothing_outside_them(tmp_path: Path) -> None:
    inp, out, temp = tmp_path / "input", tmp_path / "output", tmp_path / "temp"
    for folder in (inp, out / "job" / "deep", temp / "job", tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
    (out / "job" / "a.mp4").write_bytes(b"v")
    (out / "job" / "deep" / "b.png").write_bytes(b"p")
    (temp / "job" / "c.mp4").write_bytes(b"t")
    (temp / "metadata.txt").write_text("the job's prompt")
    (tmp_path / "elsewhere" / "keep.txt").write_text("keep")
    (out / "link").symlink_to(tmp_path / "elsewhere")
    own = [(out, "job"), (temp, "job"), (temp, "metadata.txt"), (out, ".."), (out, "../elsewhere"), (out, "link"), (out, "none")]
    assert remove_job_files(inp, out, [], [], own) == 4
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["keep.txt"]
