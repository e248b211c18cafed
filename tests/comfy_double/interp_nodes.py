"""Frame interpolation: ComfyUI-Frame-Interpolation's ``RIFE VFI`` and ComfyUI's native
``FrameInterpolationModelLoader`` + ``FrameInterpolate`` (``comfy_extras/nodes_frame_interpolation.py``).

Both give ``(n - 1) * multiplier + 1`` frames for ``n`` (one frame comes back as it is), the
sources unchanged at ``0, m, 2m...`` and blends in between (:class:`InterpolatedVideo`). They
differ in what a client sees: the pack's node prints to stdout and sends no progress of its own
(``rife_*``); the native one sends progress per pair of frames, ``max`` the number of in-between
frames (``native_*_ws.jsonl``), and its loader tells RIFE from FILM by the checkpoint's keys,
refusing the pack's 4-block RIFE (``native_rife_error_pack_checkpoint_*``). The worker uses the
native node since it gave the pack's frames (docs/performance.md); the pack's stays here because the
VHS recordings (``vhs_*``) were made on its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import state_dicts
from .values import Handle, Images, LazyVideo, NodeContext, NodeFunction, NodeResult, image_count, require_model


@dataclass
class InterpolatedVideo(LazyVideo):
    """``RIFE VFI``'s output: each source frame, then ``multiplier - 1`` frames towards the next.

    ``(n - 1) * multiplier + 1`` frames for ``n`` source frames (``rife_*_probe.json``: 3 -> 5, 7, 9
    for x2, x3, x4; 1 -> 1). The source frames pass through unchanged; in-between frame ``k`` of a
    pair is the blend ``(1 - t) * a + t * b`` at ``t = k / multiplier``, the time step RIFE is asked
    for. (The recorded random-weight model gives about ``(a + b) / 2`` at every ``t``; a trained one
    moves pixels along the motion instead. Neither is reproducible without the weights; a blend at
    ``t`` is the model-free stand-in, equal to the recording at x2.)
    """

    source: Images | LazyVideo
    multiplier: int

    def _source(self, index: int) -> np.ndarray:
        return self.source.frames[index] if isinstance(self.source, Images) else self.source.frame(index)

    @property
    def source_count(self) -> int:
        return image_count(self.source)

    @property
    def count(self) -> int:
        n = self.source_count
        return (n - 1) * self.multiplier + 1 if n else 0

    def frame(self, index: int) -> np.ndarray:
        pair, step = divmod(index, self.multiplier)
        if step == 0:
            return self._source(pair)
        t = step / self.multiplier
        a, b = self._source(pair).astype(np.float32), self._source(pair + 1).astype(np.float32)
        return np.ascontiguousarray(np.rint(a * (1.0 - t) + b * t).astype(np.uint8))


def rife_vfi(
    ctx: NodeContext,
    ckpt_name: str,
    frames: Images | LazyVideo,
    clear_cache_after_n_frames: int = 10,
    multiplier: int = 2,
    fast_mode: bool = False,
    ensemble: bool = False,
    scale_factor: float = 1.0,
    dtype: str = "float32",
    torch_compile: bool = False,
    batch_size: int = 1,
    optional_interpolation_states: Any = None,
) -> NodeResult:
    """ComfyUI-Frame-Interpolation's ``RIFE VFI``: :class:`InterpolatedVideo`, and the pack's prints
    on stdout. It sends no ``progress`` message of its own (``rife_ws.jsonl``)."""
    loaded = ctx.process.setdefault("rife_models", set())
    key = (ckpt_name, dtype, torch_compile)
    variant = f"{dtype}{'+ torch.compile' if torch_compile else ''}"
    print(f"Comfy-VFI: {'Using cached' if key in loaded else 'Loaded and cached'} model {ckpt_name} ({variant})")
    loaded.add(key)
    video = InterpolatedVideo(frames, multiplier)
    if multiplier > 1:  # the cache is cleared after every ``clear_cache_after_n_frames`` pairs done
        for _ in range(max(0, video.source_count - 1) // max(1, clear_cache_after_n_frames)):
            print("Comfy-VFI: Clearing cache... Done cache clearing")
    print("Comfy-VFI: Final clearing cache... Done cache clearing")
    print(f"Comfy-VFI done! {video.count} frames generated")
    return (video,), None


#: ``_detect_and_load``: a key only FILMNet has, the prefixes raw RIFE checkpoints carry, and the
#: keys ``detect_rife_config`` reads (the 5-block RIFE 4.2x layout).
FILM_KEY = "extract.extract_sublevels.convs.0.0.conv.weight"
RIFE_PREFIXES = ("module.", "flownet.")
RIFE_KEYS = ("encode.cnn3.weight", *(f"blocks.{i}.conv0.1.0.weight" for i in range(5)))


def frame_interpolation_model_loader(ctx: NodeContext, model_name: str) -> NodeResult:
    """FILM by its key, else RIFE once ``block{i}.`` reads ``blocks.{i}.``; anything else (the
    pack's ``rife49.pth``: 4 blocks, ``encode.0/1``) is ``ValueError: Unrecognized frame
    interpolation model format``. Only the keys are checked, not every tensor's shape."""
    keys = set(state_dicts.tensor_shapes(require_model(ctx, "frame_interpolation", model_name)))
    if FILM_KEY in keys:
        return (Handle("INTERP_MODEL", model_name, ("film",)),), None
    for prefix in RIFE_PREFIXES:
        keys = {key.removeprefix(prefix) for key in keys}
    keys = {_rife_block_key(key) for key in keys}
    if not set(RIFE_KEYS) <= keys:
        raise ValueError("Unrecognized frame interpolation model format")
    return (Handle("INTERP_MODEL", model_name, ("rife",)),), None


def _rife_block_key(key: str) -> str:
    """``block{i}.`` -> ``blocks.{i}.`` for the five blocks, as the loader renames raw RIFE keys."""
    for index in range(5):
        if key.startswith(f"block{index}."):
            return f"blocks.{index}.{key[len(f'block{index}.'):]}"
    return key


def frame_interpolate(ctx: NodeContext, interp_model: Handle, images: Images | LazyVideo, multiplier: int) -> NodeResult:
    """Progress after each pair of frames, by the ``multiplier - 1`` frames put between them."""
    pairs = image_count(images) - 1
    if pairs < 1 or multiplier < 2:
        return (images,), None
    steps = pairs * (multiplier - 1)
    for pair in range(1, pairs + 1):
        ctx.progress(pair * (multiplier - 1), steps)
    return (InterpolatedVideo(images, multiplier),), None


#: class_type -> implementation.
NODES: dict[str, NodeFunction] = {
    "RIFE VFI": rife_vfi,
    "FrameInterpolationModelLoader": frame_interpolation_model_loader,
    "FrameInterpolate": frame_interpolate,
}
