"""What each node class "does" in the double: cheap stand-ins with the real nodes' arithmetic.

No model is loaded, but everything a client can observe is computed as the real node would:
loaders fail when their file vanished after validation, ``LoadImage`` really opens the file with
Pillow, ``ImageResize+`` and ``WanImageToVideo`` fit the image with the same rules, the sampler
reports its own step span, VAEDecode yields ``width//8*8 x height//8*8`` and ``((length-1)//4)*4+1``
frames per batch item (the Wan latent is ``length`` -> ``(length-1)//4+1`` frames of ``w/8 x h/8``),
and ``VHS_VideoCombine`` writes a real video plus its "workflow" PNG with VHS's file naming.
"""

from __future__ import annotations

import json
import logging
import os
import re
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
    """A Wan video latent: what VAEDecode needs to know to "decode" it."""

    width: int
    height: int
    length: int
    batch: int
    start: np.ndarray | None
    seed: int | None = None

    def __str__(self) -> str:
        return f"<LATENT {self.batch}x16x{(self.length - 1) // 4 + 1}x{self.height // 8}x{self.width // 8}>"


@dataclass
class DecodedVideo:
    """VAEDecode's IMAGE output, produced lazily frame by frame."""

    plan: media.FramePlan
    batch: int

    @property
    def count(self) -> int:
        return self.plan.count * self.batch

    def frames(self) -> Iterator[np.ndarray]:
        for _ in range(self.batch):
            for index in range(self.plan.count):
                yield self.plan.frame(index)

    def __str__(self) -> str:
        h, w = self.plan.first.shape[:2]
        return f"<IMAGE {self.count}x{h}x{w}x3>"


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
    notes: dict[str, Any] = field(default_factory=dict)


NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]


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


def lora_loader_model_only(ctx: NodeContext, model: Handle, lora_name: str, strength_model: float) -> NodeResult:
    _require_model(ctx, "loras", lora_name)
    return (Handle(model.kind, model.name, model.patches + (f"lora:{lora_name}@{strength_model}",)),), None


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
    out = Latent(
        width=latent_image.width,
        height=latent_image.height,
        length=latent_image.length,
        batch=latent_image.batch,
        start=latent_image.start,
        seed=noise_seed,
    )
    return (out,), None


def vae_decode(ctx: NodeContext, samples: Latent, vae: Handle) -> NodeResult:
    width, height = samples.width // 8 * 8, samples.height // 8 * 8
    count = ((samples.length - 1) // 4) * 4 + 1
    if samples.start is not None:
        first = media.center_crop(samples.start, width, height)
    else:
        first = media.gray_frame(width, height)
    return (DecodedVideo(media.FramePlan(first, count), max(1, samples.batch)),), None


def vhs_video_combine(
    ctx: NodeContext,
    images: DecodedVideo | Images | None,
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
    frames = list(images.frames) if isinstance(images, Images) else None
    total = len(frames) if frames is not None else images.count
    first = frames[0] if frames is not None else images.plan.first
    output_dir = ctx.folders.output_dir if save_output else ctx.folders.temp_dir
    full_folder, filename, subfolder = _save_path(filename_prefix, output_dir)
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
            try:
                media.write_video(
                    full_folder / file,
                    sequence,
                    video_format=format,
                    frame_rate=frame_rate,
                    pix_fmt=str(widgets.get("pix_fmt", "yuv420p")),
                    crf=widgets.get("crf", 19),
                    metadata=metadata,
                    on_frame=on_frame,
                )
            except (av.FFmpegError, ValueError) as err:
                (full_folder / file).unlink(missing_ok=True)  # ffmpeg refuses before writing a file
                raise Exception(f"An error occurred in the ffmpeg subprocess:\n{err}") from err  # noqa: TRY002
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


def _save_path(filename_prefix: str, output_dir: Path) -> tuple[Path, str, str]:
    """``folder_paths.get_save_image_path``: split ``sub/prefix``; refuse leaving the folder."""
    prefix = _expand_vars(filename_prefix)
    normalized = os.path.normpath(prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    full = Path(os.path.join(output_dir, subfolder))
    if os.path.commonpath((str(output_dir), os.path.abspath(full))) != str(output_dir):
        message = (
            "**** ERROR: Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {os.path.abspath(full)}\n"
            f"         output_dir: {output_dir}\n"
            f"         commonpath: {os.path.commonpath((str(output_dir), os.path.abspath(full)))}"
        )
        logger.error(message)
        raise Exception(message)  # noqa: TRY002 - ComfyUI raises a bare Exception
    full.mkdir(parents=True, exist_ok=True)
    return full, filename, subfolder


def _expand_vars(prefix: str) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    for key, value in {
        "%width%": "0",
        "%height%": "0",
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
}

#: Classes that receive every input of the node, declared or not (VHS's ``ContainsAll`` hidden dict).
ACCEPTS_ANY_INPUT = frozenset({"VHS_VideoCombine"})

#: Classes that report progress while running (a "crash" fault fires after their first step).
PROGRESS_CLASSES = frozenset({"KSamplerAdvanced", "VHS_VideoCombine"})
