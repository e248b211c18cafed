"""The core nodes of the Wan graphs in the double: cheap stand-ins with the real nodes' arithmetic.

No model is loaded, but everything a client can observe is computed as the real node would:
loaders fail when their file vanished after validation, ``LoadImage`` really opens the file with
Pillow, ``ImageResize+`` and ``WanImageToVideo`` fit the image with the same rules, the samplers
report their own step span, VAEDecode yields ``width//s*s x height//s*s`` and ``((length-1)//4)*4+1``
frames per batch item (a Wan latent is ``length`` -> ``(length-1)//4+1`` frames of ``w/s x h/s``,
``s`` = 8, or 16 for ``Wan22ImageToVideoLatent``'s Wan 2.2 VAE latent), and a LoRA that does not
fit the model is logged key by key. Facts are from ComfyUI v0.30.0 (``nodes.py``,
``comfy_extras/nodes_wan.py``, ``nodes_hunyuan.py``, ``nodes_images.py``,
``nodes_torch_compile.py``, ``comfy/lora.py``) and the recordings. The media nodes live in
``audio_nodes``, ``video_nodes``, ``control_nodes``, ``interp_nodes`` and ``save_nodes``;
``registry`` puts them all together.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from . import easycache, media, state_dicts
from .values import (
    Conditioning,
    DecodedVideo,
    Handle,
    Images,
    Latent,
    LazyVideo,
    NodeContext,
    NodeFunction,
    NodeResult,
    image_frames,
    require_model,
)

logger = logging.getLogger(__name__)

def load_image(ctx: NodeContext, image: str) -> NodeResult:
    frames = media.load_image_frames(ctx.folders.annotated_path(image))
    mask = np.zeros(frames[0].shape[:2], dtype=np.float32)
    return (Images(frames), mask), None


def image_resize_plus(
    ctx: NodeContext,
    image: Images,
    width: int,
    height: int,
    interpolation: str = "nearest",
    method: str = "stretch",
    condition: str = "always",
    multiple_of: int = 0,
) -> NodeResult:
    frames = [media.image_resize_plus(f, width, height, method, interpolation, condition, multiple_of) for f in image.frames]
    out_h, out_w = frames[0].shape[:2]
    return (Images(frames), out_w, out_h), None


def unet_loader(ctx: NodeContext, unet_name: str, weight_dtype: str = "default") -> NodeResult:
    require_model(ctx, "diffusion_models", unet_name)
    return (Handle("MODEL", unet_name, (weight_dtype,)),), None


def clip_loader(ctx: NodeContext, clip_name: str, type: str, device: str = "default") -> NodeResult:  # noqa: A002
    require_model(ctx, "text_encoders", clip_name)
    return (Handle("CLIP", clip_name, (type,)),), None


def vae_loader(ctx: NodeContext, vae_name: str) -> NodeResult:
    if vae_name != "pixel_space":
        require_model(ctx, "vae", vae_name)
    return (Handle("VAE", vae_name),), None


#: The double's stand-in for "this LoRA key fits the model": Wan diffusion-model LoRA keys start so.
FITTING_LORA_KEY_PREFIX = "diffusion_model.blocks."


def lora_loader_model_only(ctx: NodeContext, model: Handle, lora_name: str, strength_model: float) -> NodeResult:
    """Logs ``lora key not loaded: <key>`` (a warning, as ``comfy/lora.py`` does) for every tensor
    of the LoRA file that does not fit the model, in the file's (sorted) key order; nothing reaches
    the websocket or history (``lora_mismatch_*``). Without weights the double cannot match keys to
    a model, so a key fits when it starts with :data:`FITTING_LORA_KEY_PREFIX`."""
    path = require_model(ctx, "loras", lora_name)
    for key in sorted(state_dicts.tensor_shapes(path)):
        if not key.startswith(FITTING_LORA_KEY_PREFIX):
            logger.warning("lora key not loaded: %s", key)
    return (model.patched(f"lora:{lora_name}@{strength_model}"),), None


def model_sampling_sd3(ctx: NodeContext, model: Handle, shift: float) -> NodeResult:
    return (model.patched(f"shift:{shift}"),), None


def clip_text_encode(ctx: NodeContext, text: str, clip: Handle) -> NodeResult:
    return (Conditioning(text),), None


def wan_image_to_video(
    ctx: NodeContext,
    positive: Conditioning,
    negative: Conditioning,
    vae: Handle,
    width: int,
    height: int,
    length: int,
    batch_size: int,
    start_image: Images | None = None,
    clip_vision_output: Any = None,
) -> NodeResult:
    start = None
    if start_image is not None and start_image.frames:
        start = media.upscale_center(start_image.frames[0], width, height)
    latent = Latent(width=width, height=height, length=length, batch=batch_size, start=start)
    return (positive, negative, latent), None


def ksampler_advanced(
    ctx: NodeContext,
    model: Handle,
    add_noise: str,
    noise_seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    start_at_step: int,
    end_at_step: int,
    return_with_leftover_noise: str,
) -> NodeResult:
    """Progress ``max`` is the node's own span: ``min(end_at_step, steps) - start_at_step``."""
    span = max(0, min(end_at_step, steps) - start_at_step)
    _sample(ctx, model, positive, start_at_step, span, steps)
    return (dataclasses.replace(latent_image, seed=noise_seed),), None


def ksampler(
    ctx: NodeContext,
    model: Handle,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    denoise: float = 1.0,
) -> NodeResult:
    """Progress ``max`` is ``steps`` (``ti2v5b_*_ws.jsonl``: 1/6 then 6/6): a denoise below 1 takes
    the last ``steps`` of ``int(steps / denoise)`` sigmas; a denoise of 0 leaves no step at all."""
    span = steps if denoise > 0.0 else 0
    schedule = steps if denoise >= 1.0 or span == 0 else int(steps / denoise)
    _sample(ctx, model, positive, schedule - span, span, schedule)
    return (dataclasses.replace(latent_image, seed=seed),), None


#: The hidden states of an audio encoding the S2V model weighs: wav2vec2 large's 24 layers and its
#: input. A wav2vec2 base encoding (12 layers: 13) fails at the sampler (``s2v_error_base_encoder_*``).
S2V_AUDIO_LAYERS = 25


def _sample(ctx: NodeContext, model: Handle, positive: Conditioning, first_step: int, span: int, schedule: int) -> None:
    """Steps ``first_step`` .. ``first_step + span - 1`` of a ``schedule``-step sigma schedule, each
    reported as progress ``n / span``; an EasyCache on the model logs as it would."""
    if positive.audio_layers not in (None, S2V_AUDIO_LAYERS):
        raise RuntimeError(
            f"The size of tensor a ({positive.audio_layers}) must match the size of tensor b ({S2V_AUDIO_LAYERS}) at non-singleton dimension 1"
        )
    cache = easycache.StepCache.of(model, schedule)
    try:
        for step in range(1, span + 1):
            if cache is not None:
                cache.step(first_step + step - 1)
            ctx.progress(step, span, delay=ctx.step_delay)
    finally:
        if cache is not None:
            cache.finish(span)


def empty_hunyuan_latent_video(ctx: NodeContext, width: int, height: int, length: int, batch_size: int = 1) -> NodeResult:
    """A ``batch_size x 16 x ((length-1)//4+1) x h/8 x w/8`` latent with nothing in it (T2V)."""
    return (Latent(width=width, height=height, length=length, batch=batch_size, start=None),), None


def wan22_image_to_video_latent(
    ctx: NodeContext,
    vae: Handle,
    width: int,
    height: int,
    length: int,
    batch_size: int,
    start_image: Images | LazyVideo | None = None,
) -> NodeResult:
    """A 48-channel latent at 1/16 of the size (the Wan 2.2 VAE); its first frame is the start
    image fitted like ``WanImageToVideo`` does. Without a start image the node returns its
    one-item latent as is: ``batch_size`` only repeats a latent that has a start image."""
    start = None
    batch = 1
    if frames := image_frames(start_image):
        start = media.upscale_center(frames[0], width, height)
        batch = batch_size
    latent = Latent(width=width, height=height, length=length, batch=batch, start=start, spatial=16, channels=48)
    return (latent,), None


def wan_first_last_frame_to_video(
    ctx: NodeContext,
    positive: Conditioning,
    negative: Conditioning,
    vae: Handle,
    width: int,
    height: int,
    length: int,
    batch_size: int,
    start_image: Images | LazyVideo | None = None,
    end_image: Images | LazyVideo | None = None,
    clip_vision_start_image: Any = None,
    clip_vision_end_image: Any = None,
) -> NodeResult:
    """The first frame is the start image and the last the end image (both fitted like
    ``WanImageToVideo``: bilinear, centre crop), when given.

    The real node sizes the latent by ``vae.spacial_compression_encode()``, read from the VAE's
    weights; the double's VAE is only a name, so it uses the Wan 2.1 VAE's 8, the VAE of the
    recorded graphs (``flf2v_*_history.json``).
    """
    start = end = None
    if starts := image_frames(start_image):
        start = media.upscale_center(starts[0], width, height)
    if ends := image_frames(end_image):  # ``end_image[-length:]``: the batch's last frame ends the video
        end = media.upscale_center(ends[-1], width, height)
    latent = Latent(width=width, height=height, length=length, batch=batch_size, start=start, end=end)
    return (positive, negative, latent), None


def vae_decode(ctx: NodeContext, samples: Latent, vae: Handle) -> NodeResult:
    """``4 * latent frames - 3`` frames per batch item: the latent's pictures when a node fixed
    them, else its start image panning (or cross-fading to its end image)."""
    scale = samples.spatial
    width, height = samples.width // scale * scale, samples.height // scale * scale
    if samples.pictures is not None:
        pictures = [media.center_crop(p, width, height) for p in samples.pictures]
        return (Images(pictures * max(1, samples.batch)),), None
    count = samples.decoded_frames
    if samples.start is not None:
        first = media.center_crop(samples.start, width, height)
    else:
        first = media.gray_frame(width, height)
    last = media.center_crop(samples.end, width, height) if samples.end is not None else None
    return (DecodedVideo(media.FramePlan(first, count, last), max(1, samples.batch)),), None


def image_scale(
    ctx: NodeContext, image: Images | LazyVideo, upscale_method: str, width: int, height: int, crop: str
) -> NodeResult:
    """``ImageScale``: 0 for one side keeps the aspect; 0 for both keeps the image."""
    frames = image_frames(image)
    if (width == 0 and height == 0) or not frames:
        return (Images(frames),), None
    oh, ow = frames[0].shape[:2]
    if width == 0:
        width = max(1, round(ow * height / oh))
    elif height == 0:
        height = max(1, round(oh * width / ow))
    return (Images([media.common_upscale(f, width, height, upscale_method, crop) for f in frames]),), None


def image_invert(ctx: NodeContext, image: Images | LazyVideo) -> NodeResult:
    return (Images([255 - f for f in image_frames(image)]),), None


def image_batch(ctx: NodeContext, image1: Images | LazyVideo, image2: Images | LazyVideo) -> NodeResult:
    """``ImageBatch``: image2 is fitted to image1's size (bilinear, centre crop) when they differ."""
    first, second = image_frames(image1), image_frames(image2)
    if first and second and first[0].shape != second[0].shape:
        height, width = first[0].shape[:2]
        second = [media.common_upscale(f, width, height, "bilinear", "center") for f in second]
    return (Images(first + second),), None


def repeat_image_batch(ctx: NodeContext, image: Images | LazyVideo, amount: int) -> NodeResult:
    return (Images(image_frames(image) * amount),), None


def torch_compile_model(ctx: NodeContext, model: Handle, backend: str) -> NodeResult:
    """Nothing is compiled here: the model passes through, marked with its backend."""
    return (model.patched(f"compile:{backend}"),), None


def image_from_batch(ctx: NodeContext, image: LazyVideo | Images, batch_index: int, length: int) -> NodeResult:
    """``length`` frames from ``batch_index`` (negative counts from the end), clamped to the batch."""
    total = len(image.frames) if isinstance(image, Images) else image.count
    if batch_index < 0:
        batch_index += total
    batch_index = max(0, min(total - 1, batch_index))
    length = min(total - batch_index, length)
    indexes = range(batch_index, batch_index + length)
    if isinstance(image, Images):
        frames = [image.frames[i] for i in indexes]
    else:
        frames = [image.frame(i) for i in indexes]
    return (Images(frames),), None



#: class_type -> implementation, for the core classes.
NODES: dict[str, NodeFunction] = {
    "LoadImage": load_image,
    "ImageResize+": image_resize_plus,
    "UNETLoader": unet_loader,
    "CLIPLoader": clip_loader,
    "VAELoader": vae_loader,
    "LoraLoaderModelOnly": lora_loader_model_only,
    "ModelSamplingSD3": model_sampling_sd3,
    "CLIPTextEncode": clip_text_encode,
    "WanImageToVideo": wan_image_to_video,
    "KSamplerAdvanced": ksampler_advanced,
    "KSampler": ksampler,
    "VAEDecode": vae_decode,
    "EmptyHunyuanLatentVideo": empty_hunyuan_latent_video,
    "Wan22ImageToVideoLatent": wan22_image_to_video_latent,
    "WanFirstLastFrameToVideo": wan_first_last_frame_to_video,
    "ImageFromBatch": image_from_batch,
    "TorchCompileModel": torch_compile_model,
    "ImageScale": image_scale,
    "ImageInvert": image_invert,
    "ImageBatch": image_batch,
    "RepeatImageBatch": repeat_image_batch,
    "EasyCache": easycache.easy_cache,
}
