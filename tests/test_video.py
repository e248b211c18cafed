"""Output handling: VHS's recorded history entry, the payload limit, and cleanup that stays in its folders."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from comfy_bootstrap.errors import OutputMissing
from tests.recorded import history_entry
from worker.errors import OutputTooLarge
from worker.video import VideoFile, encode_video, find_videos, remove_job_files


def test_finds_the_mp4_vhs_reported_in_recorded_history() -> None:
    outputs = history_entry("e2e_history.json")["outputs"]
    [video] = find_videos(outputs, "17")
    assert video == VideoFile("wan22_00008.mp4", "", "output", "video/h264-mp4", "wan22_00008.png")


def test_no_mp4_in_outputs_is_a_clear_error() -> None:
    with pytest.raises(OutputMissing, match=r"reported no MP4"):
        find_videos({"17": {"gifs": [{"filename": "x.png"}]}}, "17")
    with pytest.raises(OutputMissing, match=r"video node \(17\)"):
        find_videos({}, "17")


def test_encode_roundtrips_under_the_limit() -> None:
    data = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 10
    assert base64.b64decode(encode_video(data, response_overhead=100, limit=10_000)) == data


def test_encode_refuses_a_video_over_the_payload_limit_and_says_what_to_do() -> None:
    data = b"x" * 7_600_000  # 10.1 MB as base64
    with pytest.raises(OutputTooLarge) as err:
        encode_video(data, response_overhead=4096, limit=10_000_000)
    text = str(err.value)
    assert "7.6 MB" in text and "MAX_RESPONSE_BYTES" in text and "options.length" in text


def test_cleanup_removes_image_video_and_png_but_nothing_outside(tmp_path: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    (out / "sub").mkdir(parents=True)
    inp.mkdir()
    (inp / "job.png").write_bytes(b"i")
    (out / "sub" / "v_00001.mp4").write_bytes(b"v")
    (out / "sub" / "v_00001.png").write_bytes(b"p")
    (out / "other_00001.mp4").write_bytes(b"keep")
    outside = tmp_path / "secret.txt"
    outside.write_text("keep")
    videos = [
        VideoFile("v_00001.mp4", "sub", "output", "video/h264-mp4", "v_00001.png"),
        VideoFile("secret.txt", "..", "output", "video/h264-mp4", None),
    ]
    removed = remove_job_files(inp, out, "job.png", videos)
    assert removed == 3
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["other_00001.mp4", "secret.txt"]
