"""Pixels and files: image fitting like the real nodes, and real MP4/WebM/PNG/GIF writing.

The double produces a real video so the worker's output handling is exercised end to end: the frames
are the uploaded image fitted exactly as ``ImageResize+`` and ``WanImageToVideo`` would fit it, then
slowly panned (a visible change per frame), encoded with PyAV at the prompt's ``crf`` and
``pix_fmt`` with the encoder VHS's format names (libx264, libx265, libvpx-vp9, h264_nvenc), tagged
BT.709 like VHS's ffmpeg command. ``preset=ultrafast`` keeps an 832x480x81 video well under a second
on two cores. An encoder that refuses to open (libx265 above crf 51, libvpx-vp9 above 63, NVENC
without an NVIDIA driver: ``tests/recordings/vhs_*.json``) is reported as ffmpeg reports it.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.logging
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

#: VHS ``video/...`` formats the double can write: encoder and file extension (VHS's
#: ``video_formats/*.json``: ``-c:v`` and ``extension``; webm names no codec, ffmpeg's webm muxer
#: defaults to VP9, as recorded).
VIDEO_CODECS: dict[str, tuple[str, str]] = {
    "video/h264-mp4": ("libx264", "mp4"),
    "video/h265-mp4": ("libx265", "mp4"),
    "video/webm": ("libvpx-vp9", "webm"),
    "video/nvenc_h264-mp4": ("h264_nvenc", "mp4"),
}

#: VHS's ``-vtag``: ``h265-mp4`` writes ``hvc1`` (``vhs_h265-mp4_*.json``: codec_tag hvc1).
_CODEC_TAGS = {"libx265": "hvc1"}

#: Bytes a pipe holds on Linux before a writer blocks: VHS writes rgb24 frames into ffmpeg's stdin,
#: and an ffmpeg that has died only breaks that write once the buffer is full.
PIPE_BUFFER = 65536


def encoder_options(codec: str, widgets: dict[str, Any]) -> dict[str, str]:
    """The encoder options VHS's ``main_pass`` passes for these widget values (speed aside)."""
    crf = str(widgets.get("crf", 19))
    if codec == "libx264":
        return {"crf": crf, "preset": "ultrafast"}
    if codec == "libx265":
        return {"crf": crf, "preset": "ultrafast", "x265-params": "log-level=quiet"}
    if codec == "libvpx-vp9":
        return {"crf": crf, "b": "0", "deadline": "realtime", "cpu-used": "8"}
    if codec == "h264_nvenc":  # ``-b:v <bitrate>M`` (``K`` without megabit); no crf
        unit = "M" if str(widgets.get("megabit", True)) == "True" else "K"
        return {"b": f"{widgets.get('bitrate', 10)}{unit}"}
    return {}


class FfmpegFailure(Exception):
    """ffmpeg refused to encode: what it wrote to stderr (``-v error``), whether it leaves an empty
    file, and whether VHS's write into its stdin broke (then VHS raises; else it reports success)."""

    def __init__(self, stderr: str, *, leaves_empty_file: bool) -> None:
        super().__init__(stderr)
        self.stderr = stderr
        self.leaves_empty_file = leaves_empty_file
        self.broken_pipe = False


@dataclass
class _Addresses:
    """ffmpeg prints its contexts as ``[name @ 0x...]``: made-up, stable within one message."""

    names: dict[str, str] = field(default_factory=dict)
    _next: Iterator[int] = field(default_factory=lambda: itertools.count(0x55D0C0DE1000, 0x1C0))

    def __call__(self, key: str) -> str:
        if key not in self.names:
            self.names[key] = f"0x{next(self._next):x}"
        return self.names[key]


def _ffmpeg_stderr(codec: str, muxer: str, path: Path, err: av.FFmpegError, logged: list[str]) -> FfmpegFailure:
    """ffmpeg 9's messages when the encoder will not open (recorded in ``tests/recordings/vhs_*``).

    ``logged`` are the encoder's own lines (libavcodec's log, the same through PyAV). An option out
    of range fails while ffmpeg opens the output, so no file is made; any other refusal comes when
    the first frame reaches the encoder, after the muxer created an empty file.
    """
    at = _Addresses()
    lines = [f"[{codec} @ {at('codec')}] {line}" for line in logged]
    strerror = err.strerror or str(err)
    if any(line.startswith("Error setting option") for line in logged):
        lines += [
            f"[vost#0:0/{codec} @ {at('vost')}] Error applying encoder options: {strerror}",
            f"Error opening output file {path}.",
            f"Error opening output files: {strerror}",
        ]
        return FfmpegFailure("\n".join(lines) + "\n", leaves_empty_file=False)
    code = f"-{err.errno} ({strerror})" if err.errno else f"-22 ({strerror})"
    vost, enc, vf = f"[vost#0:0/{codec} @ {at('vost')}]", f"[enc:{codec} @ {at('enc')}]", f"[vf#0:0 @ {at('vf')}]"
    lines += [
        f"{vost} {enc} Error while opening encoder - maybe incorrect parameters such as bit_rate, rate, width or height.",
        f"{vf} Error sending frames to consumers: {strerror}",
        f"{vf} Task finished with error code: {code}",
        f"{vost} {enc} Could not open encoder before EOF",
        f"{vost} Task finished with error code: -22 (Invalid argument)",
        f"{vf} Terminating thread with return code {code}",
        f"{vost} Terminating thread with return code -22 (Invalid argument)",
        f"[out#0/{muxer} @ {at('out')}] Nothing was written into output file, because at least one of its "
        "streams received no packets.",
    ]
    return FfmpegFailure("\n".join(lines) + "\n", leaves_empty_file=True)


def _open_encoder(stream: Any, codec: str, muxer: str, path: Path) -> None:
    """Open the encoder now, turning a refusal into ffmpeg's stderr (:class:`FfmpegFailure`)."""
    old_level, old_skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # ffmpeg prints its lines again at every run
    try:
        with av.logging.Capture(local=True) as logs:
            try:
                stream.codec_context.open()
                return
            except av.FFmpegError as err:
                failure = err
    finally:
        av.logging.set_level(old_level)
        av.logging.set_skip_repeated(old_skip)
    logged = [message.rstrip("\n") for _level, _name, message in logs]
    raise _ffmpeg_stderr(codec, muxer, path, failure, logged) from failure


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
    widgets: dict[str, Any],
    metadata: dict[str, str] | None,
    on_frame: Callable[[], None],
) -> int:
    """Encode ``frames`` with PyAV; ``on_frame`` runs before each frame is handed over (progress,
    interrupt), as VHS updates its progress bar before each write into ffmpeg's stdin.

    Returns the number of frames written. The container is finalised even when ``on_frame`` raises
    (an interrupt), as ffmpeg finalises the file when its stdin closes. When the encoder will not
    open, the frames still go to the "pipe" like VHS's writes: :class:`FfmpegFailure` is raised once
    they no longer fit in :data:`PIPE_BUFFER` (VHS's ``BrokenPipeError``: ``broken_pipe`` set), or
    after the last frame when they all fit (VHS then sees nothing wrong).
    """
    codec, extension = VIDEO_CODECS[video_format]
    options = {"movflags": "use_metadata_tags"} if extension == "mp4" else {}
    first = next(frames, None)
    container = av.open(str(path), "w", format=extension, options=options)
    written = 0
    try:
        if first is None:
            return 0
        rate = Fraction(str(frame_rate)).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = pix_fmt
        stream.options = encoder_options(codec, widgets)
        context = stream.codec_context
        if codec in _CODEC_TAGS:
            context.codec_tag = _CODEC_TAGS[codec]
        context.color_range, context.colorspace, context.color_primaries, context.color_trc = 1, 1, 1, 1  # tv, bt709
        try:
            _open_encoder(stream, codec, extension, path)
        except FfmpegFailure as failure:
            _close_quietly(container)
            if failure.leaves_empty_file:
                path.write_bytes(b"")  # ffmpeg had opened the output before the encoder refused
            else:
                path.unlink(missing_ok=True)
            _feed_dead_ffmpeg(_chain(first, frames), failure, on_frame)
        if metadata:
            for key, value in metadata.items():
                container.metadata[key] = value
        for array in _chain(first, frames):
            on_frame()
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
            for packet in stream.encode(frame):
                container.mux(packet)
            written += 1
        for packet in stream.encode():
            container.mux(packet)
    finally:
        _close_quietly(container)
    return written


def _feed_dead_ffmpeg(frames: Iterator[np.ndarray], failure: FfmpegFailure, on_frame: Callable[[], None]) -> None:
    """VHS's writes into the stdin of an ffmpeg that has exited: they fit in the pipe's buffer, or
    the first write that does not breaks the pipe."""
    buffered = 0
    for array in frames:
        on_frame()
        buffered += array.nbytes
        if buffered > PIPE_BUFFER:
            failure.broken_pipe = True
            break
    raise failure


def _close_quietly(container: Any) -> None:
    """Close the output; a container whose stream never opened has nothing to finalise."""
    try:
        container.close()
    except av.FFmpegError:
        pass


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
