"""Property-based tests of the video decoder (worker/video.py) on hostile bytes.

Whatever the bytes — random, or a real MP4, MOV, WebM or Matroska (H.264, H.265, VP8, VP9, AV1, with
and without sound) damaged by flipped, cut, repeated, inserted or spliced bytes — the answer is a
PreparedVideo within the limits or one InvalidInput naming the field, never another exception, and
within the profile's deadline.
"""

from __future__ import annotations

import io

import av
from hypothesis import event, given
from hypothesis import strategies as st

from tests.media_files import numbered_video, video_file
from worker.errors import InvalidInput
from worker.settings import Limits
from worker.video import PreparedVideo, decode_video

#: Small limits, so a mutation that inflates a header is refused as fast as in production.
LIMITS = Limits(max_video_bytes=2**20, max_video_seconds=2.0, max_video_frames=40, max_video_pixels=128 * 128)

SEEDS = {
    "MP4 H.264 + AAC": video_file("mp4", 0.5, 16, (32, 32), audio=True),
    "MP4 H.265": numbered_video("mp4", 8, 16, size=(32, 32), codec="libx265"),
    "MOV H.264": numbered_video("mov", 8, 16, size=(32, 32)),
    "WebM VP9 + Opus": video_file("webm", 0.5, 16, (32, 32), audio=True),
    "WebM VP8": numbered_video("webm", 8, 16, size=(32, 32), codec="libvpx"),
    "WebM AV1": numbered_video("webm", 8, 16, size=(64, 64), codec="libsvtav1"),
    "Matroska H.264 VFR": numbered_video("matroska", times=[0.0, 0.05, 0.3, 0.35, 0.5], size=(32, 32)),
}
NAMES = sorted(SEEDS)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real file with a few bytes flipped, set, removed, repeated or inserted, cut short, or with a
    piece of another file spliced in."""
    name = draw(st.sampled_from(NAMES))
    event(f"seed {name}")
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "cut", "drop", "repeat", "insert", "splice"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at : at + 4] = draw(st.sampled_from([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80"]))
        elif kind == "cut":
            del data[at:]
        elif kind == "drop":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 256))] * draw(st.integers(1, 4))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            other = SEEDS[draw(st.sampled_from(NAMES))]
            begin = draw(st.integers(0, len(other) - 1))
            data[at : at + draw(st.integers(0, 512))] = other[begin : begin + draw(st.integers(1, 512))]
    return bytes(data)


def _decoded_or_refused(data: bytes, rate: float | None, start: float) -> None:
    try:
        prepared = decode_video(data, field="pose_video", limits=LIMITS, rate=rate, start=start)
    except InvalidInput as refused:
        assert str(refused).startswith("pose_video: ") and "\n" not in str(refused) and len(str(refused)) < 400
        event("refused")
        return
    assert isinstance(prepared, PreparedVideo) and prepared.mp4[4:8] == b"ftyp"
    assert 0 < prepared.frames <= LIMITS.max_video_frames and 0 < prepared.width * prepared.height <= LIMITS.max_video_pixels
    with av.open(io.BytesIO(prepared.mp4)) as opened:
        assert sum(1 for _ in opened.decode(video=0)) == prepared.frames
    event("decoded")


@given(mutated(), st.sampled_from([None, 8.0, 16.0]), st.sampled_from([0.0, 0.0, 0.25]))
def test_a_damaged_real_video_is_decoded_or_refused(data: bytes, rate: float | None, start: float) -> None:
    _decoded_or_refused(data, rate, start)


@given(st.one_of(st.binary(max_size=512), st.sampled_from(NAMES).flatmap(lambda n: st.binary(max_size=256).map(lambda b: SEEDS[n][:48] + b))))
def test_random_bytes_are_decoded_or_refused(data: bytes) -> None:
    _decoded_or_refused(data, 16.0, 0.0)
