"""Sizes and lengths by name: ``resolution`` + ``aspect_ratio`` → width × height, ``duration`` → frames.

Pure arithmetic; worker/request.py turns the answers into values or errors. The table and the
rounding rules are documented in docs/api.md ("Sizes by preset").
"""

from __future__ import annotations

import math

RESOLUTIONS: tuple[str, ...] = ("480p", "576p", "720p")
ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1", "4:3", "3:4", "auto")

#: Landscape frame sizes (width, height) of each resolution; portrait ratios are these transposed.
#: 16:9 uses Wan's own sizes (832×480, 1280×720); the short side is the resolution's number.
_LANDSCAPE: dict[str, dict[str, tuple[int, int]]] = {
    "480p": {"16:9": (832, 480), "4:3": (640, 480), "1:1": (480, 480)},
    "576p": {"16:9": (1024, 576), "4:3": (768, 576), "1:1": (576, 576)},
    "720p": {"16:9": (1280, 720), "4:3": (960, 720), "1:1": (720, 720)},
}
_PORTRAIT = {"9:16": "16:9", "3:4": "4:3"}


def short_side(resolution: str) -> int:
    return int(resolution.rstrip("p"))


def preset_size(resolution: str, aspect_ratio: str, step: int) -> tuple[int, int]:
    """Width and height of a named aspect ratio, each rounded down to a multiple of ``step``."""
    landscape = _LANDSCAPE[resolution]
    if aspect_ratio in _PORTRAIT:
        height, width = landscape[_PORTRAIT[aspect_ratio]]
    else:
        width, height = landscape[aspect_ratio]
    return _down(width, step), _down(height, step)


def image_size(resolution: str, image_width: int, image_height: int, step: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The size for ``aspect_ratio: auto``: the image's aspect, the resolution's short side.

    The long side is rounded to the nearest multiple of ``step``; a size over the maxima is scaled
    down (keeping the aspect) until it fits.
    """
    short = _down(short_side(resolution), step)
    aspect = image_width / image_height
    if aspect >= 1:
        width, height = short * aspect, float(short)
    else:
        width, height = float(short), short / aspect
    scale = min(1.0, max_width / width, max_height / height)
    if scale < 1.0:
        return max(step, _down(width * scale, step)), max(step, _down(height * scale, step))
    return max(step, _nearest(width, step)), max(step, _nearest(height, step))


def length_for(duration: float, frame_rate: float) -> int:
    """The 4n+1 frame count nearest to ``duration × frame_rate + 1``."""
    return 4 * round(duration * frame_rate / 4) + 1


def _down(value: float, step: int) -> int:
    return int(value // step) * step


def _nearest(value: float, step: int) -> int:
    return int(math.floor(value / step + 0.5)) * step
