"""Pixels and files: image fitting like the real nodes, and real MP4/PNG/GIF writing.

The double produces a real video so the worker's output handling is exercised end to end: the frames
are the uploaded image fitted exactly as ``ImageResize+`` and ``WanImageToVideo`` would fit it, then
slowly panned (a visible change per frame), encoded with PyAV/libx264 at the prompt's ``crf`` and
``pix_fmt``. ``preset=ultrafast`` keeps an 832x480x81 video well under a second on two cores.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

#: ``ImageResize+`` interpolation names -> Pillow filters.
_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

#: ``nodes.MAX_RESOLUTION``.
MAX_RESOLUTION = 16384

#: VHS ``video/...`` formats the double can write: codec, container extension, pixel formats.
VIDEO_CODECS: dict[str, tuple[str, str]] = {
    "video/h264-mp4": ("libx264", "mp4"),
    "video/h265-mp4": ("libx265", "mp4"),
    "video/webm": ("libvpx-vp9", "webm"),
}


def load_image_frames(path: Path) -> list[np.ndarray]:
    """``LoadImage``: every frame of the file as RGB uint8 (Pillow errors propagate unchanged).

    Opening a corrupt file raises ``PIL.UnidentifiedImageError("cannot identify image file
    '<path>'")`` exactly as in ComfyUI's recorded ``execution_error``.
    """
    frames: list[np.ndarray] = []
    with Image.open(str(path)) as img:
        size = None
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = np.asarray(frame.convert("RGB"), dtype=np.uint8)
            if size is None:
                size = rgb.shape
            elif rgb.shape != size:
                continue
            frames.append(rgb)
    return frames


def _resize(image: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    pil = Image.fromarray(image)
    resample = _INTERPOLATION.get(interpolation, Image.Resampling.BILINEAR)
    return np.asarray(pil.resize((max(1, width), max(1, height)), resample), dtype=np.uint8)


def _needs_resize(condition: str, width: int, height: int, ow: int, oh: int) -> bool:
    return (
        "always" in condition
        or (condition == "downscale if bigger" and (oh > height or ow > width))
        or (condition == "upscale if smaller" and (oh < height or ow < width))
        or ("bigger area" in condition and oh * ow > height * width)
        or ("smaller area" in condition and oh * ow < height * width)
    )


def image_resize_plus(
    image: np.ndarray,
    width: int,
    height: int,
    method: str,
    interpolation: str,
    condition: str,
    multiple_of: int,
) -> np.ndarray:
    """ComfyUI_essentials ``ImageResize+``: stretch / keep proportion / fill / crop / pad."""
    oh, ow = image.shape[:2]
    x = y = x2 = y2 = 0
    pad = (0, 0, 0, 0)
    if multiple_of > 1:
        width -= width % multiple_of
        height -= height % multiple_of
    if method in ("keep proportion", "pad"):
        if width == 0:
            width = MAX_RESOLUTION if oh < height else ow
        if height == 0:
            height = MAX_RESOLUTION if ow < width else oh
        ratio = min(width / ow, height / oh)
        new_w, new_h = round(ow * ratio), round(oh * ratio)
        if method == "pad":
            left, top = (width - new_w) // 2, (height - new_h) // 2
            pad = (left, width - new_w - left, top, height - new_h - top)
        width, height = new_w, new_h
    elif method.startswith("fill"):
        width = width if width > 0 else ow
        height = height if height > 0 else oh
        ratio = max(width / ow, height / oh)
        new_w, new_h = round(ow * ratio), round(oh * ratio)
        x, y = (new_w - width) // 2, (new_h - height) // 2
        x2, y2 = x + width, y + height
        if x2 > new_w:
            x -= x2 - new_w
        if y2 > new_h:
            y -= y2 - new_h
        x, y = max(x, 0), max(y, 0)
        width, height = new_w, new_h
    else:
        width = width if width > 0 else ow
        height = height if height > 0 else oh

    if _needs_resize(condition, width, height, ow, oh):
        out = _resize(image, width, height, interpolation)
        if any(pad):
            left, right, top, bottom = pad
            out = np.pad(out, ((top, bottom), (left, right), (0, 0)), constant_values=0)
        if method.startswith("fill") and (x > 0 or y > 0 or x2 > 0 or y2 > 0):
            out = out[y:y2, x:x2]
    else:
        out = image
    if multiple_of > 1 and (out.shape[1] % multiple_of or out.shape[0] % multiple_of):
        h, w = out.shape[:2]
        cx, cy = (w % multiple_of) // 2, (h % multiple_of) // 2
        out = out[cy : h - ((h % multiple_of) - cy), cx : w - ((w % multiple_of) - cx)]
    return np.ascontiguousarray(out)


def common_upscale(image: np.ndarray, width: int, height: int, method: str, crop: str) -> np.ndarray:
    """``comfy.utils.common_upscale``: with ``crop="center"`` crop to the new aspect first, then
    resize with ``method``."""
    if crop == "center":
        oh, ow = image.shape[:2]
        old_aspect, new_aspect = ow / oh, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((ow - ow * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((oh - oh * (old_aspect / new_aspect)) / 2)
        image = image[y : oh - y, x : ow - x]
    return _resize(image, width, height, method)


def upscale_center(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``comfy.utils.common_upscale(..., "bilinear", "center")``: crop to the aspect, then resize."""
    return common_upscale(image, width, height, "bilinear", "center")


def center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre crop (``vae_encode_crop_pixels``: the VAE only sees multiples of 8)."""
    oh, ow = image.shape[:2]
    x, y = max(0, (ow - width) // 2), max(0, (oh - height) // 2)
    return np.ascontiguousarray(image[y : y + height, x : x + width])


@dataclass(frozen=True)
class FramePlan:
    """What VAEDecode "decoded": the first frame, the frame count, and how each frame moves.

    Without ``last`` the first frame pans (image-to-video, text-to-video); with ``last`` (a
    first-last-frame latent's end image) the frames cross-fade from ``first`` to exactly ``last``.
    """

    first: np.ndarray
    count: int
    last: np.ndarray | None = None

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` of ``count``."""
        if self.last is not None:
            return self._cross_fade(index)
        width = self.first.shape[1]
        shift = round(index * width * 0.25 / max(1, self.count - 1))
        return self.first if shift == 0 else np.roll(self.first, -shift, axis=1)

    def _cross_fade(self, index: int) -> np.ndarray:
        """``first`` at 0, ``last`` at ``count - 1`` (and for a single frame, as the end image is
        written over the start image in ``WanFirstLastFrameToVideo``), linear in between."""
        assert self.last is not None
        if index >= self.count - 1:
            return self.last
        alpha = index / (self.count - 1)
        mixed = self.first.astype(np.float32) * (1.0 - alpha) + self.last.astype(np.float32) * alpha
        return np.ascontiguousarray(np.rint(mixed).astype(np.uint8))


def gray_frame(width: int, height: int) -> np.ndarray:
    """A neutral gradient used when there is no start image (text-to-video graphs)."""
    ramp = np.linspace(64, 192, width, dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(ramp[None, :, None], (height, width, 3)))


def write_png(path: Path, image: np.ndarray, text: dict[str, str]) -> None:
    """VHS's "workflow" PNG: the first frame with the prompt as PNG text chunks."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.fromarray(image).save(path, pnginfo=info, compress_level=4)


def write_video(
    path: Path,
    frames: Iterator[np.ndarray],
    *,
    video_format: str,
    frame_rate: float,
    pix_fmt: str,
    crf: Any,
    metadata: dict[str, str] | None,
    on_frame: Callable[[], None],
) -> int:
    """Encode ``frames`` with PyAV; ``on_frame`` runs after each frame (progress, interrupt).

    Returns the number of frames written. The container is finalised even when ``on_frame`` raises
    (an interrupt), as ffmpeg finalises the file when its stdin closes.
    """
    codec, _ = VIDEO_CODECS[video_format]
    options = {"movflags": "use_metadata_tags"} if path.suffix == ".mp4" else {}
    container = av.open(str(path), "w", options=options)
    written = 0
    try:
        rate = Fraction(str(frame_rate)).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate)
        first = next(frames, None)
        if first is None:
            return 0
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = pix_fmt
        stream.options = (
            {"crf": str(crf), "preset": "ultrafast"}
            if codec != "libvpx-vp9"
            else {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        )
        if metadata:
            for key, value in metadata.items():
                container.metadata[key] = value
        for array in _chain(first, frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            written += 1
            on_frame()
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return written


def write_animated_image(
    path: Path,
    frames: Iterator[np.ndarray],
    *,
    image_format: str,
    frame_rate: float,
    loop_count: int,
    lossless: bool,
    on_frame: Callable[[], None],
) -> None:
    """VHS ``image/gif`` and ``image/webp`` (saved with Pillow, as VHS does)."""
    images: list[Image.Image] = []
    for array in frames:
        images.append(Image.fromarray(array))
        on_frame()
    if not images:
        return
    extra: dict[str, Any] = {"disposal": 2} if image_format == "gif" else {"lossless": lossless}
    images[0].save(
        path,
        format=image_format.upper(),
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / frame_rate),
        loop=loop_count,
        **extra,
    )


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def video_metadata(prompt: dict[str, Any], extra_pnginfo: dict[str, Any] | None) -> dict[str, str]:
    """The MP4 tags VHS writes with ``save_metadata``: ``prompt`` (+ extra_pnginfo keys), time."""
    tags = {"prompt": json.dumps(prompt)}
    for key, value in (extra_pnginfo or {}).items():
        tags[str(key)] = json.dumps(value)
    tags["creation_time"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return tags
