"""Video-guided Wan: ``CLIPVisionLoader`` / ``CLIPVisionEncode``, ``WanAnimateToVideo`` and
``Wan22FunControlToVideo`` (``nodes.py``, ``comfy_extras/nodes_wan.py``).

The latents count frames and segments exactly as the real nodes (``animate_*``, ``fun_control_*``),
and fix what VAEDecode shows, so a client can see its inputs in the video: the reference image with
the pose (Animate) or control (Fun-Control) frame drawn over it (:func:`overlay`: the brighter of
the two, as a skeleton or an edge map is bright on black), the continued frames first when a
segment continues another, the background outside the character mask in replace mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from . import media
from .values import (
    Conditioning,
    Handle,
    Images,
    Latent,
    LazyVideo,
    NodeContext,
    NodeFunction,
    NodeResult,
    image_frames,
    latent_length,
    require_model,
)


def clip_vision_loader(ctx: NodeContext, clip_name: str) -> NodeResult:
    require_model(ctx, "clip_vision", clip_name)
    return (Handle("CLIP_VISION", clip_name),), None


def clip_vision_encode(ctx: NodeContext, clip_vision: Handle, image: Images | LazyVideo, crop: str) -> NodeResult:
    return (Handle("CLIP_VISION_OUTPUT", clip_vision.name, (f"crop:{crop}", f"images:{len(image_frames(image))}")),), None


def overlay(picture: np.ndarray, drawing: np.ndarray) -> np.ndarray:
    """``drawing``'s bright strokes over ``picture``."""
    return np.maximum(picture, drawing)


def _fitted(image: Images | LazyVideo | None, width: int, height: int, method: str) -> list[np.ndarray]:
    return [media.common_upscale(f, width, height, method, "center") for f in image_frames(image)]


def _from(frames: list[np.ndarray], offset: int, length: int) -> list[np.ndarray]:
    """``video[offset:][:length]``, nothing when the video ends before ``offset``."""
    return frames[offset:][:length] if len(frames) > offset else []


def _latent_pictures(reference: np.ndarray, reference_latents: int, pictures: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """What the whole latent decodes to: the reference's latent frames, then the video's, whose
    first latent frame now stands for four pictures."""
    return (reference,) * (4 * reference_latents - 3) + (pictures[0],) * 3 + tuple(pictures)


def wan_animate_to_video(
    ctx: NodeContext, positive: Conditioning, negative: Conditioning, vae: Handle, width: int, height: int, length: int,
    batch_size: int, continue_motion_max_frames: int, video_frame_offset: int, reference_image: Images | None = None,
    clip_vision_output: Any = None, face_video: Images | None = None, pose_video: Images | None = None,
    continue_motion: Images | None = None, background_video: Images | None = None, character_mask: np.ndarray | None = None,
) -> NodeResult:  # fmt: skip
    """Outputs 3-5: ``trim_latent`` (the reference's latent frames, prepended), ``trim_image``
    (``4 * ceil(continued / 4) - 3`` continued frames to drop after decoding) and the next
    segment's ``video_frame_offset`` (this one's, moved back by the continued frames, + ``length``).
    Input videos are read from the offset; a short pose video repeats its last frame."""
    references = _fitted(reference_image, width, height, "area")[:length] or [np.zeros((height, width, 3), np.uint8)]
    trim_latent = (len(references) - 1) // 4 + 1
    continued: list[np.ndarray] = []
    if continue_motion is not None:
        continued = image_frames(continue_motion)[-continue_motion_max_frames:]
        video_frame_offset = max(0, video_frame_offset - len(continued))
        continued = [media.common_upscale(f, width, height, "area", "center") for f in continued[-length:]]
    known = max(0, ((len(continued) - 1) // 4 + 1) * 4 - 3) if continued else 0
    poses = _from(_fitted(pose_video, width, height, "area"), video_frame_offset, length)
    poses += poses[-1:] * (length - len(poses)) if poses else []
    backgrounds = _from(_fitted(background_video, width, height, "area"), video_frame_offset, length)
    masks = _character_masks(character_mask, video_frame_offset, length, width, height)
    pictures = []
    for index in range(length):
        if index < len(continued):
            pictures.append(continued[index])
            continue
        picture = overlay(references[0], poses[index]) if poses else references[0]
        if known <= index < len(backgrounds):
            weight = masks[index][:, :, None] if index < len(masks) else 1.0
            picture = np.rint(weight * picture + (1.0 - weight) * backgrounds[index]).astype(np.uint8)
        pictures.append(picture)
    frames = (length - 1) // 4 + 1
    latent = Latent(width=width, height=height, length=latent_length(frames + trim_latent), batch=batch_size,
                    start=references[0], pictures=_latent_pictures(references[0], trim_latent, pictures[: 4 * frames - 3]))  # fmt: skip
    return (positive, negative, latent, trim_latent, known, video_frame_offset + length), None


def _character_masks(mask: np.ndarray | None, offset: int, length: int, width: int, height: int) -> list[np.ndarray]:
    """The mask per frame from the offset (a single mask for every frame), at the picture's size."""
    if mask is None:
        return []
    masks = list(mask) if mask.ndim == 3 else [mask]
    masks = masks * length if len(masks) == 1 else _from(masks, offset, length)
    return [_resize_mask(m, width, height) for m in masks]


def _resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """``nearest-exact``, as the node scales the mask (to the latent grid; here to the picture)."""
    return np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").resize((width, height), Image.Resampling.NEAREST))


def wan22_fun_control_to_video(
    ctx: NodeContext, positive: Conditioning, negative: Conditioning, vae: Handle, width: int, height: int, length: int,
    batch_size: int, ref_image: Images | None = None, control_video: Images | None = None,
) -> NodeResult:  # fmt: skip
    """A ``length``-frame latent whose frames are the control video's over the reference image
    (bilinear, centre); past the control video's end, the reference alone. The latent's size uses
    the Wan 2.1 VAE's 8, the VAE of the recorded graph (the double's VAE is only a name)."""
    references = _fitted(ref_image, width // 8 * 8, height // 8 * 8, "bilinear")
    base = references[0] if references else media.gray_frame(width // 8 * 8, height // 8 * 8)
    controls = _fitted(control_video, width // 8 * 8, height // 8 * 8, "bilinear")[:length]
    frames = 4 * ((length - 1) // 4 + 1) - 3
    pictures = tuple(overlay(base, controls[i]) if i < len(controls) else base for i in range(frames))
    latent = Latent(width=width, height=height, length=length, batch=batch_size, start=base, pictures=pictures)
    return (positive, negative, latent), None


#: class_type -> implementation.
NODES: dict[str, NodeFunction] = {
    "CLIPVisionLoader": clip_vision_loader,
    "CLIPVisionEncode": clip_vision_encode,
    "WanAnimateToVideo": wan_animate_to_video,
    "Wan22FunControlToVideo": wan22_fun_control_to_video,
}
