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


def object_info() -> dict[str, dict[str, Any]]:
    """``GET /object_info/{class}`` bodies of the 12 node classes of the workflow, as recorded."""
    return load_json("object_info_used_nodes.json")


def system_stats() -> dict[str, Any]:
    """The recorded ``GET /system_stats`` body (its ``argv`` is replaced by the caller)."""
    return load_json("system_stats.json")


def model_folder_names() -> list[str]:
    """The folder names ``GET /models`` answered, in ComfyUI's order."""
    return list(_load("models_endpoints.json")["requests"]["GET /models"]["body"])
