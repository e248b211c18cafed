"""The output nodes: ``VHS_VideoCombine``, ``SaveImage``, ``SaveVideo``, ``SaveAudio`` and ``PreviewAny``.

They write real files with the real nodes' names and counters (VHS counts its own way, ComfyUI's
savers with ``folder_paths.get_save_image_path``) and report them in history as recorded:
``gifs`` (VHS, only the ``-audio`` file when a track was muxed), ``images`` (+ ``animated`` for a
video), ``audio``, and ``text`` for ``PreviewAny``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from . import media, muxing
from .node_defs import format_widgets
from .values import AudioValue, Images, LazyVideo, NodeContext, NodeFunction, NodeResult, VideoFile, VideoValue, image_frames

logger = logging.getLogger(__name__)


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
    frames = image_frames(images)
    height, width = frames[0].shape[:2]
    full_folder, filename, subfolder, prefix = _save_path(filename_prefix, ctx.folders.output_dir, width, height)
    counter = _comfy_counter(full_folder, filename, prefix)
    text = _metadata(ctx, prompt, extra_pnginfo)
    results = []
    for batch_number, frame in enumerate(frames):
        file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        media.write_png(full_folder / file, frame, text)
        results.append({"filename": file, "subfolder": subfolder, "type": "output"})
        counter += 1
    return (images,), {"images": results}


def _metadata(ctx: NodeContext, prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> dict[str, str]:
    """What ComfyUI's savers embed: the prompt and the extra PNG info as JSON, none with ``--disable-metadata``."""
    if ctx.disable_metadata:
        return {}
    text = {"prompt": json.dumps(prompt)} if prompt is not None else {}
    for key, value in (extra_pnginfo or {}).items():
        text[str(key)] = json.dumps(value)
    return text


def save_video(ctx: NodeContext, video: VideoFile | VideoValue, filename_prefix: str = "video/ComfyUI", format: str = "auto",  # noqa: A002
               codec: Any = "auto", prompt: Any = None, extra_pnginfo: Any = None) -> NodeResult:  # fmt: skip
    """``<prefix>_00001_.mp4`` (H.264) with ComfyUI's counter, reported as ``images`` with
    ``animated`` (custom_savevideo.json)."""
    components = video.components()
    frames = components.images.frames
    height, width = frames[0].shape[:2]
    full_folder, filename, subfolder, prefix = _save_path(filename_prefix, ctx.folders.output_dir, width, height)
    file = f"{filename}_{_comfy_counter(full_folder, filename, prefix):05}_.mp4"
    media.write_video(full_folder / file, iter(frames), video_format="video/h264-mp4", frame_rate=components.fps,
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
                trim = str(widgets.get("trim_to_audio", "False")) != "False"
                muxing.mux_audio(Path(output_files[-1]), full_folder / file, audio, format, total / frame_rate, trim_to_audio=trim)
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


def save_audio(
    ctx: NodeContext, audio: AudioValue, filename_prefix: str = "audio/ComfyUI", prompt: Any = None, extra_pnginfo: Any = None
) -> NodeResult:
    """``SaveAudio``: ``<prefix>_00001.flac`` (ComfyUI's counter), the track's rate and channels
    kept, reported under ``audio`` (``audio_formats.json``)."""
    full_folder, filename, subfolder, prefix = _save_path(filename_prefix, ctx.folders.output_dir)
    file = f"{filename.replace('%batch_num%', '0')}_{_comfy_counter(full_folder, filename, prefix):05}.flac"
    muxing.write_flac(full_folder / file, audio.samples, audio.rate, _metadata(ctx, prompt, extra_pnginfo))
    return (), {"audio": [{"filename": file, "subfolder": subfolder, "type": "output"}]}


def preview_any(ctx: NodeContext, source: Any = None) -> NodeResult:
    """``PreviewAny``: text as it is, numbers with ``str``, anything else as indented JSON or, when
    it is no JSON (an AUDIO), ``str``; shown in history as ``text`` (``video_formats.json``)."""
    if isinstance(source, str):
        value = source
    elif isinstance(source, (int, float, bool)):
        value = str(source)
    elif source is None:
        value = "None"
    else:
        try:
            value = json.dumps(source, indent=4)
        except (TypeError, ValueError):
            value = str(source)
    return (value,), {"text": [value]}


#: class_type -> implementation.
NODES: dict[str, NodeFunction] = {
    "VHS_VideoCombine": vhs_video_combine,
    "SaveImage": save_image,
    "SaveVideo": save_video,
    "SaveAudio": save_audio,
    "PreviewAny": preview_any,
}
