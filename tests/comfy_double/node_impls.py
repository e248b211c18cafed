"""What each node class "does" in the double: cheap stand-ins with the real nodes' arithmetic.

No model is loaded, but everything a client can observe is computed as the real node would:
loaders fail when their file vanished after validation, ``LoadImage`` really opens the file with
Pillow, ``ImageResize+`` and ``WanImageToVideo`` fit the image with the same rules, the samplers
report their own step span, VAEDecode yields ``width//s*s x height//s*s`` and ``((length-1)//4)*4+1``
frames per batch item (a Wan latent is ``length`` -> ``(length-1)//4+1`` frames of ``w/s x h/s``,
``s`` = 8, or 16 for ``Wan22ImageToVideoLatent``'s Wan 2.2 VAE latent), ``VHS_VideoCombine``
writes a real video plus its "workflow" PNG with VHS's file naming and ``SaveImage`` real PNGs
with ComfyUI's, ``RIFE VFI`` puts ``multiplier - 1`` blends between neighbouring frames, and a
LoRA that does not fit the model is logged key by key. Facts are from ComfyUI v0.30.0
(``nodes.py``, ``comfy_extras/nodes_wan.py``, ``nodes_hunyuan.py``, ``nodes_images.py``,
``nodes_torch_compile.py``, ``comfy/lora.py``), ComfyUI-Frame-Interpolation
(``vfi_models/rife/__init__.py``) and the recordings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from . import media
from .folders import Folders
from .node_defs import NodeCatalog, format_widgets

logger = logging.getLogger(__name__)


# -- values passed between nodes --------------------------------------------------------------------


@dataclass(frozen=True)
class Handle:
    """A loaded MODEL / CLIP / VAE (only its identity matters to the double)."""

    kind: str
    name: str
    patches: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"<{self.kind} {self.name}{''.join(f' +{p}' for p in self.patches)}>"


@dataclass(frozen=True)
class Conditioning:
    text: str

    def __str__(self) -> str:
        return f"<CONDITIONING {self.text[:40]!r}>"


@dataclass
class Images:
    """An IMAGE batch: frames as RGB uint8 arrays of one size."""

    frames: list[np.ndarray]

    def __str__(self) -> str:
        h, w = self.frames[0].shape[:2] if self.frames else (0, 0)
        return f"<IMAGE {len(self.frames)}x{h}x{w}x3>"


@dataclass
class Latent:
    """A Wan video latent: what VAEDecode needs to know to "decode" it.

    ``start`` / ``end`` are the images the latent was conditioned on (first / last frame), already
    fitted to ``width x height``; ``spatial`` is the VAE's spatial compression (8 for the Wan 2.1
    VAE, 16 for the Wan 2.2 VAE) and ``channels`` the latent's (16, or 48 for Wan 2.2).
    """

    width: int
    height: int
    length: int
    batch: int
    start: np.ndarray | None
    seed: int | None = None
    end: np.ndarray | None = None
    spatial: int = 8
    channels: int = 16

    def __str__(self) -> str:
        frames = (self.length - 1) // 4 + 1
        return f"<LATENT {self.batch}x{self.channels}x{frames}x{self.height // self.spatial}x{self.width // self.spatial}>"


class LazyVideo:
    """An IMAGE batch made frame by frame on demand, so an 81-frame 832x480 video is never held."""

    @property
    def count(self) -> int:
        raise NotImplementedError

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` of the whole IMAGE batch (``0 <= index < count``)."""
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        for index in range(self.count):
            yield self.frame(index)

    def __str__(self) -> str:
        h, w = self.frame(0).shape[:2] if self.count else (0, 0)
        return f"<IMAGE {self.count}x{h}x{w}x3>"


@dataclass
class DecodedVideo(LazyVideo):
    """VAEDecode's IMAGE output, produced lazily frame by frame (batch items one after the other)."""

    plan: media.FramePlan
    batch: int

    @property
    def count(self) -> int:
        return self.plan.count * self.batch

    def frames(self) -> Iterator[np.ndarray]:
        for _ in range(self.batch):
            for index in range(self.plan.count):
                yield self.plan.frame(index)

    def frame(self, index: int) -> np.ndarray:
        return self.plan.frame(index % self.plan.count)

    def __str__(self) -> str:
        h, w = self.plan.first.shape[:2]
        return f"<IMAGE {self.count}x{h}x{w}x3>"


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
        if isinstance(self.source, Images):
            return self.source.frames[index]
        return self.source.frame(index)

    @property
    def source_count(self) -> int:
        return len(self.source.frames) if isinstance(self.source, Images) else self.source.count

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


# -- the context the executor gives a node -----------------------------------------------------------


@dataclass
class NodeContext:
    """Everything a node implementation may use; callbacks come from the executor."""

    node_id: str
    class_type: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    folders: Folders
    catalog: NodeCatalog
    progress: Callable[..., None]  # progress(value, total, delay=0.0): interrupt check + report
    step_delay: float = 0.0
    missing_output: bool = False
    disable_metadata: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    #: What stays loaded in the "process" between prompts (the RIFE model cache), kept by the executor.
    process: dict[str, Any] = field(default_factory=dict)


NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]


def _image_frames(image: Images | LazyVideo | None) -> list[np.ndarray]:
    """The frames of an IMAGE input, whether a loaded image or a lazy output (VAEDecode, RIFE)."""
    if image is None:
        return []
    return image.frames if isinstance(image, Images) else list(image.frames())


def _require_model(ctx: NodeContext, folder: str, name: str) -> Path:
    """``folder_paths.get_full_path_or_raise``: the file may have vanished since validation."""
    path = ctx.folders.find_model(folder, name)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
    return path


# -- node implementations ---------------------------------------------------------------------------


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
    _require_model(ctx, "diffusion_models", unet_name)
    return (Handle("MODEL", unet_name, (weight_dtype,)),), None


def clip_loader(ctx: NodeContext, clip_name: str, type: str, device: str = "default") -> NodeResult:  # noqa: A002
    _require_model(ctx, "text_encoders", clip_name)
    return (Handle("CLIP", clip_name, (type,)),), None


def vae_loader(ctx: NodeContext, vae_name: str) -> NodeResult:
    if vae_name != "pixel_space":
        _require_model(ctx, "vae", vae_name)
    return (Handle("VAE", vae_name),), None


#: The double's stand-in for "this LoRA key fits the model": Wan diffusion-model LoRA keys start so.
FITTING_LORA_KEY_PREFIX = "diffusion_model.blocks."


def lora_loader_model_only(ctx: NodeContext, model: Handle, lora_name: str, strength_model: float) -> NodeResult:
    """Logs ``lora key not loaded: <key>`` (a warning, as ``comfy/lora.py`` does) for every tensor
    of the LoRA file that does not fit the model, in the file's (sorted) key order; nothing reaches
    the websocket or history (``lora_mismatch_*``). Without weights the double cannot match keys to
    a model, so a key fits when it starts with :data:`FITTING_LORA_KEY_PREFIX`."""
    path = _require_model(ctx, "loras", lora_name)
    for key in _safetensors_keys(path):
        if not key.startswith(FITTING_LORA_KEY_PREFIX):
            logger.warning("lora key not loaded: %s", key)
    return (Handle(model.kind, model.name, model.patches + (f"lora:{lora_name}@{strength_model}",)),), None


def _safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a ``.safetensors`` file, sorted; none when it is not one (an empty stand-in)."""
    try:
        with path.open("rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            header = json.loads(stream.read(length)) if 0 < length < 100_000_000 else {}
    except (OSError, ValueError, struct.error):
        return []
    return sorted(key for key in header if key != "__metadata__") if isinstance(header, dict) else []


def model_sampling_sd3(ctx: NodeContext, model: Handle, shift: float) -> NodeResult:
    return (Handle(model.kind, model.name, model.patches + (f"shift:{shift}",)),), None


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
    for step in range(1, span + 1):
        ctx.progress(step, span, delay=ctx.step_delay)
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
    for step in range(1, span + 1):
        ctx.progress(step, span, delay=ctx.step_delay)
    return (dataclasses.replace(latent_image, seed=seed),), None


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
    if frames := _image_frames(start_image):
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
    if starts := _image_frames(start_image):
        start = media.upscale_center(starts[0], width, height)
    if ends := _image_frames(end_image):  # ``end_image[-length:]``: the batch's last frame ends the video
        end = media.upscale_center(ends[-1], width, height)
    latent = Latent(width=width, height=height, length=length, batch=batch_size, start=start, end=end)
    return (positive, negative, latent), None


def vae_decode(ctx: NodeContext, samples: Latent, vae: Handle) -> NodeResult:
    scale = samples.spatial
    width, height = samples.width // scale * scale, samples.height // scale * scale
    count = ((samples.length - 1) // 4) * 4 + 1
    if samples.start is not None:
        first = media.center_crop(samples.start, width, height)
    else:
        first = media.gray_frame(width, height)
    last = media.center_crop(samples.end, width, height) if samples.end is not None else None
    return (DecodedVideo(media.FramePlan(first, count, last), max(1, samples.batch)),), None


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


def image_scale(
    ctx: NodeContext, image: Images | LazyVideo, upscale_method: str, width: int, height: int, crop: str
) -> NodeResult:
    """``ImageScale``: 0 for one side keeps the aspect; 0 for both keeps the image."""
    frames = _image_frames(image)
    if (width == 0 and height == 0) or not frames:
        return (Images(frames),), None
    oh, ow = frames[0].shape[:2]
    if width == 0:
        width = max(1, round(ow * height / oh))
    elif height == 0:
        height = max(1, round(oh * width / ow))
    return (Images([media.common_upscale(f, width, height, upscale_method, crop) for f in frames]),), None


def image_invert(ctx: NodeContext, image: Images | LazyVideo) -> NodeResult:
    return (Images([255 - f for f in _image_frames(image)]),), None


def image_batch(ctx: NodeContext, image1: Images | LazyVideo, image2: Images | LazyVideo) -> NodeResult:
    """``ImageBatch``: image2 is fitted to image1's size (bilinear, centre crop) when they differ."""
    first, second = _image_frames(image1), _image_frames(image2)
    if first and second and first[0].shape != second[0].shape:
        height, width = first[0].shape[:2]
        second = [media.common_upscale(f, width, height, "bilinear", "center") for f in second]
    return (Images(first + second),), None


def repeat_image_batch(ctx: NodeContext, image: Images | LazyVideo, amount: int) -> NodeResult:
    return (Images(_image_frames(image) * amount),), None


def torch_compile_model(ctx: NodeContext, model: Handle, backend: str) -> NodeResult:
    """Nothing is compiled here: the model passes through, marked with its backend."""
    return (Handle(model.kind, model.name, model.patches + (f"compile:{backend}",)),), None


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


def save_image(
    ctx: NodeContext,
    images: LazyVideo | Images,
    filename_prefix: str = "ComfyUI",
    prompt: dict[str, Any] | None = None,
    extra_pnginfo: dict[str, Any] | None = None,
) -> NodeResult:
    """One PNG per image, ``<prefix>_<counter:05>_.png``, reported under ``images`` (node 23 of
    ``flf2v_lora_lastframe_history.json``); the prompt is kept in PNG text chunks unless ComfyUI
    runs with ``--disable-metadata`` (VHS ignores that flag; SaveImage honours it)."""
    frames = _image_frames(images)
    height, width = frames[0].shape[:2]
    full_folder, filename, subfolder, prefix = _save_path(filename_prefix, ctx.folders.output_dir, width, height)
    counter = _comfy_counter(full_folder, filename, prefix)
    text: dict[str, str] = {}
    if not ctx.disable_metadata:
        if prompt is not None:
            text["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            text[str(key)] = json.dumps(value)
    results = []
    for batch_number, frame in enumerate(frames):
        file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        media.write_png(full_folder / file, frame, text)
        results.append({"filename": file, "subfolder": subfolder, "type": "output"})
        counter += 1
    return (images,), {"images": results}


@dataclass
class AudioValue:
    """An ``AUDIO``: ``{"waveform": (batch, channels, samples), "sample_rate"}`` in ComfyUI; here the samples and rate."""

    samples: np.ndarray
    rate: int

    def __str__(self) -> str:
        return f"<AUDIO {self.samples.shape[0]}ch {self.samples.shape[1] / self.rate:.2f}s {self.rate}Hz>"


def audio_encoder_loader(ctx: NodeContext, audio_encoder_name: str) -> NodeResult:
    _require_model(ctx, "audio_encoders", audio_encoder_name)
    return (Handle("AUDIO_ENCODER", audio_encoder_name),), None


def audio_encoder_encode(ctx: NodeContext, audio_encoder: Handle, audio: AudioValue) -> NodeResult:
    """wav2vec2's features of the whole track: here only how long it is (50 feature frames a second)."""
    return ({"seconds": audio.samples.shape[1] / audio.rate, "encoder": audio_encoder.name},), None


def wan_sound_image_to_video(
    ctx: NodeContext, positive: Conditioning, negative: Conditioning, vae: Handle, width: int, height: int, length: int,
    batch_size: int, audio_encoder_output: Any = None, ref_image: Images | None = None, control_video: Any = None,
    ref_motion: Any = None,
) -> NodeResult:  # fmt: skip
    """``WanSoundImageToVideo``: a ``length``-frame latent; the reference image (bilinear, centre) is what the double's frames show."""
    start = media.upscale_center(ref_image.frames[0], width, height) if ref_image is not None and ref_image.frames else None
    return (positive, negative, Latent(width=width, height=height, length=length, batch=batch_size, start=start)), None


def wan_sound_image_to_video_extend(
    ctx: NodeContext, positive: Conditioning, negative: Conditioning, vae: Handle, length: int, video_latent: Latent,
    audio_encoder_output: Any = None, ref_image: Images | None = None, control_video: Any = None,
) -> NodeResult:  # fmt: skip
    """``WanSoundImageToVideoExtend``: the next ``length`` frames, sized and batched like ``video_latent`` (the segments so far)."""
    width, height = video_latent.width // 8 * 8, video_latent.height // 8 * 8
    start = media.upscale_center(ref_image.frames[0], width, height) if ref_image is not None and ref_image.frames else video_latent.start
    latent = Latent(width=width, height=height, length=length, batch=video_latent.batch, start=start)
    return (positive, negative, latent), None


def latent_concat(ctx: NodeContext, samples1: Latent, samples2: Latent, dim: str) -> NodeResult:
    """``LatentConcat`` along time (``t``): the latent frames of both, the first one's start image."""
    if dim != "t":
        raise Exception(f"[comfy_double] LatentConcat along {dim!r} is not emulated")  # noqa: TRY002
    frames = _latent_frames(samples1) + _latent_frames(samples2)
    return (dataclasses.replace(samples1, length=(frames - 1) * 4 + 1, end=samples2.end),), None


def trim_video_latent(ctx: NodeContext, samples: Latent, trim_amount: int) -> NodeResult:
    """``TrimVideoLatent``: the latent without its first ``trim_amount`` latent frames."""
    frames = max(1, _latent_frames(samples) - trim_amount)
    return (dataclasses.replace(samples, length=(frames - 1) * 4 + 1),), None


def _latent_frames(latent: Latent) -> int:
    return (latent.length - 1) // 4 + 1


def load_audio(ctx: NodeContext, audio: str) -> NodeResult:
    """``LoadAudio`` (comfy_extras/nodes_audio.py): the file of the input folder, decoded whole."""
    samples, rate = media.load_audio(ctx.folders.annotated_path(audio))
    return (AudioValue(samples, rate),), None


@dataclass
class VideoValue:
    """A core ``VIDEO`` (CreateVideo's output): frames and a frame rate."""

    frames: list[np.ndarray]
    fps: float


def create_video(ctx: NodeContext, images: LazyVideo | Images, fps: float, audio: Any = None, bit_depth: int = 8) -> NodeResult:
    return (VideoValue(_image_frames(images), fps),), None


def save_video(ctx: NodeContext, video: VideoValue, filename_prefix: str = "video/ComfyUI", format: str = "auto",  # noqa: A002
               codec: Any = "auto", prompt: Any = None, extra_pnginfo: Any = None) -> NodeResult:  # fmt: skip
    """``<prefix>_00001_.mp4`` (H.264) with ComfyUI's counter, reported as ``images`` with
    ``animated`` (custom_savevideo.json)."""
    height, width = video.frames[0].shape[:2]
    full_folder, filename, subfolder, prefix = _save_path(filename_prefix, ctx.folders.output_dir, width, height)
    file = f"{filename}_{_comfy_counter(full_folder, filename, prefix):05}_.mp4"
    media.write_video(full_folder / file, iter(video.frames), video_format="video/h264-mp4", frame_rate=video.fps,
                      pix_fmt="yuv420p", widgets={}, metadata=None, on_frame=lambda: None)  # fmt: skip
    return (), {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": [True]}


def vhs_video_combine(
    ctx: NodeContext,
    images: LazyVideo | Images | None,
    frame_rate: float,
    loop_count: int,
    filename_prefix: str = "AnimateDiff",
    format: str = "image/gif",  # noqa: A002 - VHS's input name
    pingpong: bool = False,
    save_output: bool = True,
    prompt: dict[str, Any] | None = None,
    extra_pnginfo: dict[str, Any] | None = None,
    unique_id: str | None = None,
    **kwargs: Any,
) -> NodeResult:
    if images is None:
        return ((save_output, []),), None
    frames = list(images.frames) if isinstance(images, Images) else None  # else a LazyVideo
    total = len(frames) if frames is not None else images.count
    first = frames[0] if frames is not None else images.frame(0)
    output_dir = ctx.folders.output_dir if save_output else ctx.folders.temp_dir
    full_folder, filename, subfolder, _ = _save_path(filename_prefix, output_dir)
    counter = _next_counter(full_folder, filename)

    workflow_png = f"{filename}_{counter:05}.png"
    text: dict[str, str] = {}
    if prompt is not None:
        text["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        text[str(key)] = json.dumps(value)
    text["CreationTime"] = time.strftime("%Y-%m-%d %H:%M:%S")
    media.write_png(full_folder / workflow_png, first, text)
    output_files = [str(full_folder / workflow_png)]

    source = iter(frames) if frames is not None else images.frames()
    sequence = _sequence(source, pingpong, loop_count, total)
    reported = 0

    def on_frame() -> None:
        nonlocal reported
        reported = min(reported + 1, total)
        ctx.progress(reported, total)

    format_type, format_ext = format.split("/", 1)
    if format_type == "image":
        file = f"{filename}_{counter:05}.{format_ext}"
        _write_image_format(ctx, full_folder / file, sequence, format_ext, frame_rate, loop_count, kwargs, on_frame)
    else:
        widgets = _format_widget_values(ctx, format, kwargs)
        if format not in media.VIDEO_CODECS:
            raise Exception(  # noqa: TRY002 - VHS raises a bare Exception for ffmpeg failures
                f"An error occurred in the ffmpeg subprocess:\n[comfy_double] the format {format} is not emulated"
            )
        file = f"{filename}_{counter:05}.{media.VIDEO_CODECS[format][1]}"
        metadata = None
        if str(widgets.get("save_metadata", "False")) != "False" and prompt is not None:
            metadata = media.video_metadata(prompt, extra_pnginfo)
        if ctx.missing_output:
            logger.warning("comfy_double: missing_output fault: %s is reported, not written", file)
            for _ in sequence:
                on_frame()
        else:
            _write_video(full_folder / file, sequence, format, frame_rate, widgets, metadata, on_frame)
            audio = kwargs.get("audio")
            if isinstance(audio, AudioValue):  # VHS muxes into <name>-audio.<ext> and reports that file
                output_files.append(str(full_folder / file))
                file = f"{filename}_{counter:05}-audio.{media.VIDEO_CODECS[format][1]}"
                media.mux_audio(Path(output_files[-1]), full_folder / file, audio.samples, audio.rate, format, total, frame_rate)
    output_files.append(str(full_folder / file))
    preview = {
        "filename": file,
        "subfolder": subfolder,
        "type": "output" if save_output else "temp",
        "format": format,
        "frame_rate": frame_rate,
        "workflow": workflow_png,
        "fullpath": output_files[-1],
    }
    return ((save_output, output_files),), {"gifs": [preview]}


def _write_video(
    path: Path,
    frames: Iterator[np.ndarray],
    video_format: str,
    frame_rate: float,
    widgets: dict[str, Any],
    metadata: dict[str, str] | None,
    on_frame: Callable[[], None],
) -> None:
    """VHS's ``ffmpeg_process``: when ffmpeg fails, VHS raises only if a write into its stdin broke;
    otherwise it prints ffmpeg's stderr and reports the (empty or missing) file as written
    (``vhs_*_crf100.json`` vs ``vhs_nvenc_h264-mp4_832x480x85.json``)."""
    try:
        media.write_video(
            path,
            frames,
            video_format=video_format,
            frame_rate=frame_rate,
            pix_fmt=str(widgets.get("pix_fmt", "yuv420p")),
            widgets=widgets,
            metadata=metadata,
            on_frame=on_frame,
        )
    except media.FfmpegFailure as failure:  # the file is left as ffmpeg leaves it
        if failure.broken_pipe:
            raise Exception(f"An error occurred in the ffmpeg subprocess:\n{failure.stderr}") from failure  # noqa: TRY002
        print(failure.stderr, end="", file=sys.stderr)
    except (av.FFmpegError, ValueError) as err:
        path.unlink(missing_ok=True)  # ffmpeg refuses before writing a file
        raise Exception(f"An error occurred in the ffmpeg subprocess:\n{err}") from err  # noqa: TRY002


def _sequence(frames: Iterator[np.ndarray], pingpong: bool, loop_count: int, total: int) -> Iterator[np.ndarray]:
    """The frames VHS feeds the encoder: pingpong appends the reverse; loop repeats the clip."""
    if not pingpong and loop_count <= 0:
        yield from frames
        return
    clip = list(frames)
    if pingpong:
        clip = clip + clip[-2:0:-1]
    for _ in range(max(0, loop_count) + 1):
        yield from clip


def _write_image_format(
    ctx: NodeContext,
    path: Path,
    frames: Iterator[np.ndarray],
    image_format: str,
    frame_rate: float,
    loop_count: int,
    kwargs: dict[str, Any],
    on_frame: Callable[[], None],
) -> None:
    if ctx.missing_output:
        for _ in frames:
            on_frame()
        return
    media.write_animated_image(
        path,
        frames,
        image_format=image_format,
        frame_rate=frame_rate,
        loop_count=loop_count,
        lossless=bool(kwargs.get("lossless", True)),
        on_frame=on_frame,
    )


def _format_widget_values(ctx: NodeContext, video_format: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """VHS ``apply_format_widgets``: given values, else the widget's default (with VHS's warning)."""
    vhs_info = ctx.catalog.info("VHS_VideoCombine")
    values: dict[str, Any] = {}
    for widget in format_widgets(vhs_info, video_format):
        name = widget[0]
        if name in kwargs:
            values[name] = kwargs[name]
            continue
        options = widget[2] if len(widget) > 2 and isinstance(widget[2], dict) else {}
        if "default" in options:
            default = options["default"]
        elif isinstance(widget[1], list):
            default = widget[1][0]
        else:
            default = {"BOOLEAN": False, "INT": 0, "FLOAT": 0, "STRING": ""}.get(widget[1], "")
        values[name] = default
        logger.warning("Missing input for %s has been set to %s", name[0], default)
    return values


def _save_path(filename_prefix: str, output_dir: Path, width: int = 0, height: int = 0) -> tuple[Path, str, str, str]:
    """``folder_paths.get_save_image_path``: split ``sub/prefix``; refuse leaving the folder.

    Returns the folder, the file name prefix, the subfolder and the prefix with its ``%...%``
    variables expanded (``%width%``/``%height%`` are 0 unless the caller gives the image size:
    SaveImage does, VHS does not).
    """
    prefix = _expand_vars(filename_prefix, width, height)
    normalized = os.path.normpath(prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    full = Path(os.path.join(output_dir, subfolder))
    if not _is_within_directory(str(output_dir), str(full)):
        message = (
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(full)}"
            f"\n         output_dir: {output_dir}"
        )
        logger.error(message)
        raise Exception(message)  # noqa: TRY002 - ComfyUI raises a bare Exception
    full.mkdir(parents=True, exist_ok=True)
    return full, filename, subfolder, prefix


def _is_within_directory(directory: str, target: str) -> bool:
    """``folder_paths.is_within_directory`` (v0.30.0): both resolved, symlinks included."""
    try:
        directory = os.path.realpath(directory)
        return os.path.commonpath((directory, os.path.realpath(target))) == directory
    except ValueError:  # a NUL byte in the path
        return False


def _expand_vars(prefix: str, width: int = 0, height: int = 0) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    for key, value in {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}",
        "%day%": f"{now.tm_mday:02}",
        "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}",
        "%second%": f"{now.tm_sec:02}",
    }.items():
        prefix = prefix.replace(key, value)
    return prefix


def _next_counter(folder: Path, filename: str) -> int:
    """VHS's counter: one more than the highest ``<filename>_<digits>...`` in the folder."""
    matcher = re.compile(f"{re.escape(filename)}_(\\d+)\\D*\\..+", re.IGNORECASE)
    highest = 0
    for existing in os.listdir(folder):
        match = matcher.fullmatch(existing)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def _comfy_counter(folder: Path, filename: str, prefix: str) -> int:
    """ComfyUI's counter (``get_save_image_path``), which SaveImage uses and VHS does not.

    A file counts when its name starts with ``filename`` + ``_``, compared over the length of the
    prefix's base name; its number is what follows, up to the first ``.`` then the first ``_``
    (0 if that is not a number). So VHS's ``<prefix>_00003.mp4`` counts as 3 for a SaveImage with
    the same prefix, and the counter is one more than the highest number.
    """
    prefix_len = len(os.path.basename(prefix))
    numbers = []
    for existing in os.listdir(folder):
        head = existing[: prefix_len + 1]
        if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
            continue
        try:
            numbers.append(int(existing[prefix_len + 1 :].split(".")[0].split("_")[0]))
        except ValueError:
            numbers.append(0)
    return max(numbers, default=0) + 1


#: class_type -> implementation.
NODE_FUNCTIONS: dict[str, Callable[..., NodeResult]] = {
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
    "VAEDecode": vae_decode,
    "VHS_VideoCombine": vhs_video_combine,
    "EmptyHunyuanLatentVideo": empty_hunyuan_latent_video,
    "Wan22ImageToVideoLatent": wan22_image_to_video_latent,
    "KSampler": ksampler,
    "WanFirstLastFrameToVideo": wan_first_last_frame_to_video,
    "ImageFromBatch": image_from_batch,
    "SaveImage": save_image,
    "TorchCompileModel": torch_compile_model,
    "RIFE VFI": rife_vfi,
    "ImageScale": image_scale,
    "ImageInvert": image_invert,
    "ImageBatch": image_batch,
    "RepeatImageBatch": repeat_image_batch,
    "CreateVideo": create_video,
    "SaveVideo": save_video,
    "LoadAudio": load_audio,
    "AudioEncoderLoader": audio_encoder_loader,
    "AudioEncoderEncode": audio_encoder_encode,
    "WanSoundImageToVideo": wan_sound_image_to_video,
    "WanSoundImageToVideoExtend": wan_sound_image_to_video_extend,
    "LatentConcat": latent_concat,
    "TrimVideoLatent": trim_video_latent,
}

#: Classes that receive every input of the node, declared or not (VHS's ``ContainsAll`` hidden dict).
ACCEPTS_ANY_INPUT = frozenset({"VHS_VideoCombine"})

#: Classes that report progress while running (a "crash" fault fires after their first step).
PROGRESS_CLASSES = frozenset({"KSampler", "KSamplerAdvanced", "VHS_VideoCombine"})
