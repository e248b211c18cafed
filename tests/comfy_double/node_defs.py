"""The node classes the double knows: recorded definitions with live COMBO lists.

``/object_info`` and ``/prompt`` validation both read the definitions through :class:`NodeCatalog`,
which rebuilds the model and input-image lists from the disk at every call, as ComfyUI's
``INPUT_TYPES()`` does.
"""

from __future__ import annotations

import copy
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
}

#: Classes with a ``VALIDATE_INPUTS`` of their own and the inputs it takes (ComfyUI then skips the
#: built-in min/max/COMBO checks for those inputs).
CUSTOM_VALIDATED_INPUTS: dict[str, tuple[str, ...]] = {"LoadImage": ("image",), "LoadAudio": ("audio",)}
#: Loaders of a file of the input folder: class -> (its input, what it is, the content types its list shows).
INPUT_FILE_LOADERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "LoadImage": ("image", "image", ("image",)),
    "LoadAudio": ("audio", "audio", ("audio", "video")),
}


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
                if cls == "VAELoader":
                    files = files + ["pixel_space"]
                if required[name][0] == "COMBO":  # a v3 schema node: its list is the COMBO's "options"
                    required[name][1]["options"] = files
                else:
                    required[name][0] = files
        if class_type == "LoadImage":
            required["image"][0] = self._folders.input_files(("image",))
        if class_type == "LoadAudio":  # a v3 schema node: its list is the COMBO's "options"
            required["audio"][1]["options"] = self._folders.input_files(("audio", "video"))
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
