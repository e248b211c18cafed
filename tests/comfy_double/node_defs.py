"""The node classes the double knows: recorded definitions with live COMBO lists.

``/object_info`` and ``/prompt`` validation both read the definitions through :class:`NodeCatalog`,
which rebuilds the model and input-image lists from the disk at every call, as ComfyUI's
``INPUT_TYPES()`` does.
"""

from __future__ import annotations

import copy
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import recordings
from .folders import Folders

#: COMBO inputs filled from a model folder: (class, input) -> folder name.
_MODEL_LISTS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("AudioEncoderLoader", "audio_encoder_name"): "audio_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("FrameInterpolationModelLoader", "model_name"): "frame_interpolation",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
}


def _of_content_types(*kinds: str) -> Callable[[str], bool]:
    """ComfyUI's ``filter_files_content_types``: the type ``mimetypes`` guesses from the name."""
    return lambda name: (mimetypes.guess_type(name)[0] or "").split("/")[0] in kinds


def _with_extensions(*extensions: str) -> Callable[[str], bool]:
    return lambda name: "." in name and name.rsplit(".", 1)[1].lower() in extensions


@dataclass(frozen=True)
class InputFileLoader:
    """A loader of a file of the input folder. Its ``VALIDATE_INPUTS`` accepts any existing file
    (ComfyUI then skips the COMBO check): ``"Invalid <what> file: <name>"`` otherwise. Its list
    shows the files ``listed`` accepts; its ``IS_CHANGED`` hashes the file's bytes or its mtime."""

    input: str
    what: str
    listed: Callable[[str], bool]
    fingerprint: str = "content"


INPUT_FILE_LOADERS: dict[str, InputFileLoader] = {
    "LoadImage": InputFileLoader("image", "image", _of_content_types("image")),
    "LoadAudio": InputFileLoader("audio", "audio", _of_content_types("audio", "video")),
    "LoadVideo": InputFileLoader("file", "video", _of_content_types("video"), fingerprint="mtime"),
    "VHS_LoadVideo": InputFileLoader("video", "video", _with_extensions("webm", "mp4", "mkv", "gif", "mov"), fingerprint="mtime"),
}


#: The COMBO inputs whose choices the double reads from the disk at every request: (class, input).
LIVE_LISTS: frozenset[tuple[str, str]] = frozenset(_MODEL_LISTS) | {(cls, loader.input) for cls, loader in INPUT_FILE_LOADERS.items()}


class NodeCatalog:
    """Read access to node definitions, as ``nodes.NODE_CLASS_MAPPINGS`` + ``INPUT_TYPES()``."""

    def __init__(self, folders: Folders) -> None:
        self._folders = folders
        self._template = recordings.object_info()

    def class_names(self) -> list[str]:
        return list(self._template)

    def has(self, class_type: Any) -> bool:
        return isinstance(class_type, str) and class_type in self._template

    def info(self, class_type: str) -> dict[str, Any]:
        """``GET /object_info/{class}`` body for one class, with the lists read from disk now."""
        info = copy.deepcopy(self._template[class_type])
        required = info["input"]["required"]
        for (cls, name), folder in _MODEL_LISTS.items():
            if cls == class_type:
                files = self._folders.list_models(folder) or []
                _set_choices(required[name], files + ["pixel_space"] if cls == "VAELoader" else files)
        if class_type in INPUT_FILE_LOADERS:
            loader = INPUT_FILE_LOADERS[class_type]
            _set_choices(required[loader.input], self._folders.input_files(loader.listed))
        return info

    def all_info(self) -> dict[str, dict[str, Any]]:
        return {name: self.info(name) for name in self._template}

    def input_types(self, class_type: str) -> dict[str, Any]:
        """``INPUT_TYPES()``: {"required": {...}, "optional": {...}, "hidden": {...}}."""
        return self.info(class_type)["input"]

    def is_output(self, class_type: str) -> bool:
        return bool(self._template.get(class_type, {}).get("output_node"))

    def return_types(self, class_type: str) -> list[Any]:
        return list(self._template[class_type]["output"])

    def includes_node_id_in_signature(self, class_type: str) -> bool:
        """``include_unique_id_in_input``: classes taking the hidden ``UNIQUE_ID`` input (VHS)."""
        hidden = self._template.get(class_type, {}).get("input", {}).get("hidden", {})
        return "UNIQUE_ID" in hidden.values()


def _set_choices(spec: list[Any], choices: list[str]) -> None:
    """A COMBO's list: ``["COMBO", {"options": [...]}]`` for a v3 schema node, else ``[[...], {...}]``."""
    if spec[0] == "COMBO":
        spec[1]["options"] = choices
    else:
        spec[0] = choices


def input_info(spec: list[Any]) -> tuple[Any, dict[str, Any]]:
    """Split one input spec (``["INT", {...}]``, ``[[choices], {...}]``, ``["IMAGE"]``)."""
    input_type = spec[0]
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return input_type, extra


def format_widgets(object_info_vhs: dict[str, Any], video_format: str) -> list[list[Any]]:
    """The extra widgets VHS adds for ``video_format`` (``pix_fmt``, ``crf``...), from object_info."""
    spec = object_info_vhs["input"]["required"]["format"]
    formats = spec[1].get("formats", {}) if len(spec) > 1 else {}
    return list(formats.get(video_format, []))
