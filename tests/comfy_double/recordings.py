"""Access to the recordings of the real ComfyUI v0.30.0 that the double replays.

The recordings (``tests/recordings/``) are the ground truth: the node definitions served by
``/object_info`` and used by ``/prompt`` validation, the ``/system_stats`` body and the list of model
folder names of ``/models`` all come from them, so the double cannot drift from what was recorded.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

RECORDINGS_DIR: Path = Path(__file__).resolve().parent.parent / "recordings"

#: The version the recordings were made with (``system_stats.json``); reported by the double too.
COMFYUI_VERSION = "0.30.0"


@functools.cache
def _load(name: str) -> Any:
    with (RECORDINGS_DIR / name).open(encoding="utf-8") as stream:
        return json.load(stream)


def load_json(name: str) -> Any:
    """A deep copy of a recorded JSON file, so callers may mutate it freely."""
    return copy.deepcopy(_load(name))


def load_jsonl(name: str) -> list[dict[str, Any]]:
    """Every line of a recorded ``.jsonl`` file (websocket captures), parsed."""
    with (RECORDINGS_DIR / name).open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


#: The recorded ``GET /object_info/{class}`` captures, merged in this order by :func:`object_info`.
OBJECT_INFO_FILES: tuple[str, ...] = (
    "object_info_used_nodes.json",  # the 12 classes of the I2V workflow
    "object_info_more_nodes.json",  # EmptyHunyuanLatentVideo, Wan22ImageToVideoLatent, KSampler
    "object_info_flf2v_nodes.json",  # WanFirstLastFrameToVideo, ImageFromBatch, SaveImage, LoraLoaderModelOnly
    "object_info_torch_compile.json",  # TorchCompileModel
    "object_info_rife_vfi.json",  # RIFE VFI (ComfyUI-Frame-Interpolation)
    "object_info_image_nodes.json",  # ImageScale, ImageInvert, ImageBatch, RepeatImageBatch (rife_*, vhs_*)
    "object_info_video_nodes.json",  # CreateVideo, SaveVideo (custom_savevideo.json)
    "object_info_media_nodes.json",  # the 41 audio, video and Wan media classes (LoadAudio, WanSoundImageToVideo, ...)
    "object_info_audio_nodes.json",  # the audio / S2V classes again, and SaveAudio
    "object_info_more_media_nodes.json",  # PreviewAny, GetImageSize, EmptyImage, ImageToMask, the native interpolation...
    "object_info_sdpose_nodes.json",  # CheckpointLoaderSimple with the SDPose checkpoint, the SDPose nodes, CropByBBoxes
)


def object_info() -> dict[str, dict[str, Any]]:
    """``GET /object_info/{class}`` bodies of every recorded node class, merged.

    A class recorded in two files (``LoraLoaderModelOnly``: ``object_info_used_nodes.json`` and
    ``object_info_flf2v_nodes.json``) takes the later file's body, at the position of its first
    appearance. The two bodies may differ only in COMBO choice lists; for ``LoraLoaderModelOnly``
    they do, in ``lora_name``: the files each recording's volume held (the flf2v volume has
    ``style/*`` LoRAs, the other the 4-step ones), and so do ``AudioEncoderLoader`` and
    ``FrameInterpolationModelLoader`` (empty on the shared recordings' volume). The double rebuilds
    model lists from its own folders at every request anyway, so which recording's list is kept
    never reaches a client. Any other difference would mean the captures disagree about the node,
    so it is refused instead of silently picking one.
    """
    merged: dict[str, dict[str, Any]] = {}
    for name in OBJECT_INFO_FILES:
        for class_type, info in load_json(name).items():
            if class_type in merged:
                _check_same_definition(class_type, merged[class_type], info, name)
            merged[class_type] = info
    return merged


def _check_same_definition(class_type: str, first: dict[str, Any], later: dict[str, Any], name: str) -> None:
    """Equal apart from COMBO choice lists, or ``ValueError``."""

    def without_name_lists(info: dict[str, Any]) -> dict[str, Any]:
        info = copy.deepcopy(info)
        for inputs in info["input"].values():
            for spec in inputs.values():
                if isinstance(spec, list) and spec and isinstance(spec[0], list):
                    spec[0] = None
                elif isinstance(spec, list) and spec[:1] == ["COMBO"]:  # a v3 schema node's list
                    spec[1]["options"] = None
        return info

    if without_name_lists(first) != without_name_lists(later):
        raise ValueError(f"{name}: {class_type} differs from its earlier recording in more than a COMBO list")


def system_stats() -> dict[str, Any]:
    """The recorded ``GET /system_stats`` body (its ``argv`` is replaced by the caller)."""
    return load_json("system_stats.json")


def model_folder_names() -> list[str]:
    """The folder names ``GET /models`` answered, in ComfyUI's order."""
    return list(_load("models_endpoints.json")["requests"]["GET /models"]["body"])
