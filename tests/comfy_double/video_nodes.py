"""Video in and pictures: ``LoadVideo`` / ``GetVideoComponents`` / ``CreateVideo`` (core VIDEO),
``VHS_LoadVideo``, ``GetImageSize``, ``EmptyImage``, ``ImageToMask`` and ``Canny``.

Real files are decoded with PyAV (``decoding``). ``LoadVideo`` only names the file: a file FFmpeg
cannot read fails in ``GetVideoComponents`` (``video_formats.json``). ``VHS_LoadVideo`` picks frames
with VHS's own clock (``load_video_nodes.py`` ``cv_frame_generator``: ``force_rate``,
``skip_first_frames``, ``select_every_nth``, ``frame_load_cap``), resizes to ``target_size`` and
reports ``video_info`` as recorded.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from . import decoding, media
from .values import (
    AudioValue,
    Images,
    LazyVideo,
    NodeContext,
    NodeFunction,
    NodeResult,
    VideoFile,
    VideoValue,
    image_count,
    image_frames,
)


def load_video(ctx: NodeContext, file: str) -> NodeResult:
    return (VideoFile(ctx.folders.annotated_path(file)),), None


def get_video_components(ctx: NodeContext, video: VideoFile | VideoValue) -> NodeResult:
    components = video.components()
    return (components.images, components.audio, components.fps, components.bit_depth), None


def create_video(
    ctx: NodeContext, images: LazyVideo | Images, fps: float, audio: AudioValue | None = None, bit_depth: int = 8
) -> NodeResult:
    return (VideoValue(image_frames(images), fps, audio),), None


def vhs_frame_indices(count: int, fps: float, force_rate: float, skip_first_frames: int, select_every_nth: int,
                      frame_load_cap: int) -> tuple[list[int], float]:  # fmt: skip
    """The frames VHS's loader keeps of ``count`` at ``fps``, and its time per loaded frame.

    Its clock: a frame is taken each ``1 / force_rate`` seconds of the source (every frame without
    ``force_rate``), the first ``skip_first_frames`` taken are dropped, then every ``select_every_nth``
    is kept, up to ``frame_load_cap``.
    """
    base = 1 / fps
    target = base if force_rate == 0 else 1 / force_rate
    kept: list[int] = []
    position, time_offset, taken, evaluated = 0, target, 0, -1
    while True:
        if time_offset < target:
            position += 1
            if position >= count:
                break
            time_offset += base
        if time_offset < target:
            continue
        time_offset -= target
        taken += 1
        if taken <= skip_first_frames:
            continue
        evaluated += 1
        if evaluated % select_every_nth:
            continue
        kept.append(position)
        if 0 < frame_load_cap <= len(kept):
            break
    return kept, target


def vhs_target_size(width: int, height: int, custom_width: int, custom_height: int, downscale_ratio: int) -> tuple[int, int]:
    """VHS's ``target_size``: one custom side keeps the aspect; both rounded to the format's multiple."""
    w, h = float(width), float(height)
    if custom_width and custom_height:
        w, h = custom_width, custom_height
    elif custom_width:
        w, h = custom_width, h * custom_width / width
    elif custom_height:
        w, h = w * custom_height / height, custom_height
    return int(w / downscale_ratio + 0.5) * downscale_ratio, int(h / downscale_ratio + 0.5) * downscale_ratio


def vhs_load_video(
    ctx: NodeContext, video: str, force_rate: float, custom_width: int, custom_height: int, frame_load_cap: int,
    skip_first_frames: int, select_every_nth: int, format: str = "AnimateDiff", meta_batch: Any = None,  # noqa: A002
    vae: Any = None, unique_id: str | None = None,
) -> NodeResult:  # fmt: skip
    """``VHS_LoadVideo``: (IMAGE, frame_count, audio, video_info). The format's ``dim`` rounds the
    size, its ``frames`` rule cuts the count; audio is the track from the first kept frame, ``None``
    without one (VHS_VideoCombine then writes no sound)."""
    path = ctx.folders.annotated_path(video.strip().strip('"'))
    try:
        decoded = decoding.decode_video(path)
    except (av.FFmpegError, ValueError) as err:
        raise ValueError(f"{path} could not be loaded with cv.") from err
    if not decoded.frames:
        raise ValueError(f"{path} could not be loaded with cv.")
    spec = ctx.catalog.input_types("VHS_LoadVideo")["optional"]["format"][1]["formats"].get(format, {})
    fps, total = decoded.fps, decoded.header_frames or len(decoded.frames)
    height, width = decoded.frames[0].shape[:2]
    kept, frame_time = vhs_frame_indices(len(decoded.frames), fps, force_rate, skip_first_frames, select_every_nth, frame_load_cap)
    expected = _expected_frames(total, fps, force_rate, select_every_nth, frame_load_cap)
    for done in range(1, len(kept) + 1):
        ctx.progress(min(done, expected), expected)
    new_width, new_height = vhs_target_size(width, height, custom_width, custom_height, 8 if vae is not None else spec.get("dim", [1])[0])
    frames = [decoded.frames[i] for i in kept]
    if (new_width, new_height) != (width, height):
        frames = [media.common_upscale(f, new_width, new_height, "lanczos", "center") for f in frames]
    if "frames" in spec and len(frames) % spec["frames"][0] != spec["frames"][1]:
        step, rest = spec["frames"][:2]
        frames = frames[: (len(frames) - rest) // step * step + rest]
    if not frames:
        raise RuntimeError("No frames generated")
    start_time = skip_first_frames * frame_time
    frame_time *= select_every_nth
    info = {
        "source_fps": fps, "source_frame_count": total, "source_duration": total / fps, "source_width": width,
        "source_height": height, "loaded_fps": 1 / frame_time, "loaded_frame_count": len(frames),
        "loaded_duration": len(frames) * frame_time, "loaded_width": new_width, "loaded_height": new_height,
    }  # fmt: skip
    return (Images(frames), len(frames), _audio_from(decoded, start_time, frame_load_cap * frame_time), info), None


def _expected_frames(total: int, fps: float, force_rate: float, select_every_nth: int, frame_load_cap: int) -> int:
    """``yieldable_frames``, the ``max`` of VHS's progress bar."""
    expected = int(total / fps * force_rate) if force_rate else total
    expected //= select_every_nth
    return min(frame_load_cap, expected) if frame_load_cap else expected


def _audio_from(decoded: decoding.DecodedFile, start: float, seconds: float) -> AudioValue | None:
    """VHS's ``get_audio``: ffmpeg's ``-ss start -t seconds`` (the rest without a duration)."""
    if decoded.audio is None:
        return None
    samples, rate = decoded.audio
    first = round(start * rate)
    last = first + round(seconds * rate) if seconds > 0 else samples.shape[1]
    return AudioValue(samples[:, first:last], rate)


def get_image_size(ctx: NodeContext, image: Images | LazyVideo, unique_id: str | None = None) -> NodeResult:
    first = image.frames[0] if isinstance(image, Images) else image.frame(0)
    height, width = first.shape[:2]
    return (width, height, image_count(image)), None


def empty_image(ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0) -> NodeResult:
    """``batch_size`` frames of one colour, ``color`` being ``0xRRGGBB``."""
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    frame = np.full((height, width, 3), rgb, dtype=np.uint8)
    return (Images([frame] * batch_size),), None


#: ``ImageToMask``'s channels.
CHANNELS = {"red": 0, "green": 1, "blue": 2}


def image_to_mask(ctx: NodeContext, image: Images | LazyVideo, channel: str) -> NodeResult:
    """A MASK batch ``(frames, height, width)`` in 0..1: one channel of each frame (alpha: all 1, the frames being RGB)."""
    frames = image_frames(image)
    if channel not in CHANNELS:
        return (np.ones((len(frames), *frames[0].shape[:2]), dtype=np.float32),), None
    return (np.stack([f[:, :, CHANNELS[channel]] for f in frames]).astype(np.float32) / 255.0,), None


def canny(ctx: NodeContext, image: Images | LazyVideo, low_threshold: float, high_threshold: float) -> NodeResult:
    """``Canny`` (kornia's ``canny``): white edges on black, one map per frame."""
    return (Images([canny_edges(f, low_threshold, high_threshold) for f in image_frames(image)]),), None


def canny_edges(frame: np.ndarray, low: float, high: float) -> np.ndarray:
    """kornia's Canny on an RGB frame: grey (BT.601 weights), a 5x5 Gaussian (sigma 1), the
    unnormalised Sobel magnitude, non-maximum suppression along the gradient (OpenCV's tie rule),
    then hysteresis (weak pixels above ``low`` joined to strong ones above ``high``, 8 neighbours)."""
    gray = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    taps = np.exp(-0.5 * np.arange(-2, 3, dtype=np.float32) ** 2)
    taps /= taps.sum()
    blurred = _filter(_filter(gray, taps, axis=0, mode="reflect"), taps, axis=1, mode="reflect")
    smooth, diff = np.array([1, 2, 1], dtype=np.float32), np.array([-1, 0, 1], dtype=np.float32)
    gx = _filter(_filter(blurred, smooth, axis=0, mode="edge"), diff, axis=1, mode="edge")
    gy = _filter(_filter(blurred, diff, axis=0, mode="edge"), smooth, axis=1, mode="edge")
    magnitude = np.sqrt(gx * gx + gy * gy + 1e-6)
    direction = np.round(np.degrees(np.arctan2(gy, gx)) / 45.0).astype(int) % 4  # 0: a horizontal gradient
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape
    keep = np.zeros_like(magnitude, dtype=bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        before = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        after = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        ties_kept = index in (0, 2)  # along an axis a pixel may equal its right / lower neighbour
        beats_after = magnitude >= after if ties_kept else magnitude > after
        keep |= (direction == index) & (magnitude > before) & beats_after
    magnitude = np.where(keep & (np.hypot(gx, gy) > 0), magnitude, 0.0)
    weak, edges = magnitude > low, magnitude > high
    while not np.array_equal(grown := edges | (weak & _dilate(edges)), edges):
        edges = grown
    return np.repeat((edges * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _filter(image: np.ndarray, taps: np.ndarray, axis: int, mode: str) -> np.ndarray:
    """Correlate ``image`` with 1-D ``taps`` along ``axis``, the border padded with ``mode``."""
    half = len(taps) // 2
    padded = np.pad(image, [(half, half) if a == axis else (0, 0) for a in range(2)], mode=mode)
    size = image.shape[axis]
    return sum(tap * np.take(padded, range(k, k + size), axis=axis) for k, tap in enumerate(taps))


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Each pixel or any of its 8 neighbours set."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.logical_or.reduce([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


#: class_type -> implementation.
NODES: dict[str, NodeFunction] = {
    "LoadVideo": load_video,
    "GetVideoComponents": get_video_components,
    "CreateVideo": create_video,
    "VHS_LoadVideo": vhs_load_video,
    "GetImageSize": get_image_size,
    "EmptyImage": empty_image,
    "ImageToMask": image_to_mask,
    "Canny": canny,
}
