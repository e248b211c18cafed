"""How the video is encoded: the formats a job may ask for (``options.video_format``), their quality
setting (``options.crf``), the file they make, and whether this machine can encode with NVENC.

VideoHelperSuite encodes with ffmpeg. Its own ``crf`` widget allows 0–100 for every format, but the
encoders do not: libx265 refuses above 51 and libvpx-vp9 above 63, and VHS then reports an empty or
missing file, or fails (recorded: ``vhs_*_crf*.json``), so the worker keeps each format's real range.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    """One format a job can ask for, and how VHS is told to make it."""

    name: str
    #: VHS_VideoCombine's ``format``.
    vhs: str
    extension: str
    content_type: str
    #: The file's first bytes at ``magic_offset`` (the container's signature).
    magic: bytes
    magic_offset: int
    #: (lowest, highest, default) quality; None for a format that takes a bitrate instead.
    crf: tuple[int, int, int] | None
    #: The format's other VHS inputs (pixel format, bitrate), fixed by the worker.
    widgets: dict[str, Any] = field(default_factory=dict)

    def is_file(self, data: bytes) -> bool:
        return data[self.magic_offset : self.magic_offset + len(self.magic)] == self.magic


_MP4 = {"extension": "mp4", "content_type": "video/mp4", "magic": b"ftyp", "magic_offset": 4}
#: Every format, the default first. H.265 is 8-bit (``yuv420p``): VHS's 10-bit default does not
#: play in most browsers and phones.
FORMATS: dict[str, VideoFormat] = {
    "h264-mp4": VideoFormat("h264-mp4", "video/h264-mp4", crf=(0, 51, 19), widgets={"pix_fmt": "yuv420p"}, **_MP4),
    "h265-mp4": VideoFormat("h265-mp4", "video/h265-mp4", crf=(0, 51, 22), widgets={"pix_fmt": "yuv420p"}, **_MP4),
    "webm": VideoFormat(
        "webm", "video/webm", "webm", "video/webm", b"\x1a\x45\xdf\xa3", 0, crf=(0, 63, 20), widgets={"pix_fmt": "yuv420p"}
    ),
    "nvenc_h264-mp4": VideoFormat(
        "nvenc_h264-mp4", "video/nvenc_h264-mp4", crf=None, widgets={"pix_fmt": "yuv420p", "bitrate": 10, "megabit": True}, **_MP4
    ),
}
DEFAULT_FORMAT = "h264-mp4"
#: The VHS inputs that differ between formats (those not in a format's widgets are removed).
FORMAT_INPUTS = ("pix_fmt", "crf", "bitrate", "megabit")


def by_extension(filename: str) -> VideoFormat | None:
    suffix = filename.rsplit(".", 1)[-1].lower()
    return next((f for f in FORMATS.values() if f.extension == suffix), None)


@functools.cache
def nvenc_available() -> str | None:
    """None when ffmpeg can encode H.264 with NVENC here, else why not (probed once: a tiny encode)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return "ffmpeg is not installed where the worker runs"
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=black:s=256x256:d=0.04",
               "-frames:v", "1", "-c:v", "h264_nvenc", "-f", "null", "-"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the NVENC probe failed ({exc})"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return f"ffmpeg cannot open the NVENC encoder ({lines[0] if lines else f'exit {done.returncode}'})"


def choose(name: str) -> tuple[VideoFormat, str | None]:
    """The format to encode with, and a warning when NVENC was asked for but is not there (then H.264 on the CPU)."""
    if name != "nvenc_h264-mp4":
        return FORMATS[name], None
    why = nvenc_available()
    if why is None:
        return FORMATS[name], None
    log.warning("video_format nvenc_h264-mp4: %s; encoding with libx264 instead", why)
    return FORMATS[DEFAULT_FORMAT], (
        f"options.video_format: nvenc_h264-mp4 is not available on this worker ({why}; data-center GPUs such as the "
        "H100 have no NVENC): the video was encoded as h264-mp4 on the CPU instead"
    )
