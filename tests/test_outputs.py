"""Outputs: VHS's and SaveImage's recorded history entries, the payload limit, and cleanup that stays in its folders."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from comfy_bootstrap.errors import OutputMissing
from tests.recorded import history_entry
from worker.delivery import Artifact, InlineDelivery, S3Delivery, choose_delivery, unavailable_modes
from worker.errors import OutputTooLarge
from worker.outputs import OutputFile, find_image, find_videos, remove_job_files
from worker.settings import S3Settings, Settings
from worker.storage import S3Storage

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
    fields = InlineDelivery(10_000, s3_configured=False).deliver(
        "job", [Artifact("video", "v.mp4", MP4, "video/mp4"), Artifact("last_frame", "f.png", png, "image/png")]
    )
    assert base64.b64decode(fields["video"]) == MP4 and base64.b64decode(fields["last_frame"]) == png


def test_inline_delivery_refuses_an_answer_over_the_payload_limit_and_says_what_to_do() -> None:
    data = b"x" * 7_600_000  # 10.1 MB as base64
    with pytest.raises(OutputTooLarge) as err:
        InlineDelivery(10_000_000, s3_configured=False).deliver("job", [Artifact("video", "v.mp4", data, "video/mp4")])
    text = str(err.value)
    assert text.startswith("the video is 7.6 MB") and "MAX_RESPONSE_BYTES" in text and "options.length" in text
    assert "configure S3 output" in text


def test_the_last_frame_counts_towards_the_limit() -> None:
    video = Artifact("video", "v.mp4", b"x" * 7_000_000, "video/mp4")  # 9.33 MB as base64: fits alone
    frame = Artifact("last_frame", "f.png", b"y" * 600_000, "image/png")
    limit = 10_000_000
    assert InlineDelivery(limit, s3_configured=True).deliver("job", [video])
    with pytest.raises(OutputTooLarge, match=r"^the video and last frame are 7\.6 MB.*output_mode \"s3\""):
        InlineDelivery(limit, s3_configured=True).deliver("job", [video, frame])


def test_the_output_mode_is_chosen_once_from_the_job_or_the_worker_default() -> None:
    storage = S3Storage(S3Settings(bucket="b", access_key_id="k", secret_access_key="s"))
    settings = Settings()  # OUTPUT_MODE=auto
    assert isinstance(choose_delivery(None, settings, None), InlineDelivery)
    assert isinstance(choose_delivery(None, settings, storage), S3Delivery)
    assert isinstance(choose_delivery("base64", settings, storage), InlineDelivery)
    assert isinstance(choose_delivery(None, Settings(output_mode="base64"), storage), InlineDelivery)
    assert unavailable_modes(settings, storage) == {}
    assert unavailable_modes(settings, None) == {
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
