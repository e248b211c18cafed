"""``custom``: a job that brings its own API-format graph (``workflow``), when the operator allows it
(``ALLOW_CUSTOM_WORKFLOW=true``).

The graph runs as given, with four exceptions: the job's ``prompt``, ``negative_prompt``, image and
seed go into the nodes whose ``_meta.title`` names their role (``positive_prompt``,
``negative_prompt``, ``load_image``, ``seed``), and every ``filename_prefix`` becomes job-unique, so
jobs never share files and the worker can delete them afterwards. The answer carries the first video
the graph made (VideoHelperSuite's ``gifs``, or core ``SaveVideo``'s ``images`` marked
``animated``: recorded in custom_savevideo.json), or its PNG images when it made no video.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from worker.encoding import by_extension
from worker.outputs import OutputFile
from worker.tasks.base import ImageSlot, Task

if TYPE_CHECKING:
    from worker.request import CustomRequest

NAME = "custom"

#: Role titles the worker fills, with the inputs it sets (the first the node has).
ROLES: dict[str, tuple[str, ...]] = {
    "positive_prompt": ("text",),
    "negative_prompt": ("text",),
    "load_image": ("image",),
    "seed": ("seed", "noise_seed"),
}

#: What the request parser needs of a custom job: one optional image, the seed option.
TASK = Task(
    name=NAME,
    summary="your own API-format graph",
    workflow="",
    roles={},
    models=(),
    images=(ImageSlot("image", required=False),),
    options=("seed",),
    defaults={},
    size_step=16,
    fill=lambda graph, job: None,
    sampler_stages=lambda request: {},
    lora_targets={},
)


def unknown_classes(workflow: Mapping[str, Any], registered: set[str]) -> list[str]:
    return sorted({node["class_type"] for node in workflow.values()} - registered)


def fill(request: CustomRequest, image_name: str | None, stem: str) -> tuple[dict[str, Any], list[str]]:
    """The graph to run: the job's values put into the titled nodes, file prefixes made job-unique;
    and a warning for each value the graph has no node for."""
    prompt = copy.deepcopy(request.workflow)
    values = {"positive_prompt": request.prompt, "negative_prompt": request.negative_prompt, "load_image": image_name}
    values["seed"] = request.seed
    filled: set[str] = set()
    for node_id, node in prompt.items():
        role = (node.get("_meta") or {}).get("title")
        inputs = node["inputs"]
        if role in ROLES and values.get(role) is not None:
            name = next((n for n in ROLES[role] if n in inputs), ROLES[role][0])
            inputs[name] = values[role]
            filled.add(role)
        if "filename_prefix" in inputs:
            inputs["filename_prefix"] = f"{stem}_{node_id}"
    given = {"positive_prompt": "prompt", "negative_prompt": "negative_prompt", "load_image": "image"}
    warnings = [
        f"{field}: given, but no node of the workflow is titled {role!r}, so it was not used"
        for role, field in given.items()
        if values[role] is not None and role not in filled
    ]
    return prompt, warnings


def find_outputs(outputs: Mapping[str, Any]) -> tuple[list[OutputFile], list[OutputFile]]:
    """The videos the graph reported (VHS ``gifs``, ``SaveVideo``'s animated ``images``) and its PNG images."""
    videos, images = [], []
    for node_outputs in outputs.values():
        for entry in (node_outputs.get("gifs") or []) + (node_outputs.get("images") or []):
            if not isinstance(entry, dict) or not entry.get("filename") or entry.get("type", "output") != "output":
                continue
            name = str(entry["filename"])
            if by_extension(name) is not None:
                videos.append(OutputFile.from_entry(entry, "workflow"))
            elif name.lower().endswith(".png"):
                images.append(OutputFile.from_entry(entry))
    return videos, images


#: Node classes whose progress is sampling steps.
SAMPLER_CLASSES = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
#: Node classes that write the video (the encode stage).
VIDEO_CLASSES = frozenset({"VHS_VideoCombine", "SaveVideo"})


def progress(prompt: Mapping[str, Any]) -> dict[str, Any]:
    """What the progress reporter needs: each sampler as a ``sampling`` stage of its own steps,
    the first decoder and video writer, the nodes before sampling."""
    samplers = [nid for nid, node in prompt.items() if node["class_type"] in SAMPLER_CLASSES]
    first = lambda classes: next((nid for nid, node in prompt.items() if node["class_type"] in classes), None)  # noqa: E731
    before = set(prompt) - set(samplers) - {nid for nid, node in prompt.items() if _downstream_of(prompt, nid, samplers)}
    steps = max((int(prompt[nid]["inputs"].get("steps", 1)) for nid in samplers if isinstance(prompt[nid]["inputs"].get("steps"), int)), default=1)
    return {
        "samplers": {nid: ("sampling", 0) for nid in samplers},
        "decode": first({"VAEDecode", "VAEDecodeTiled"}),
        "encode": first(VIDEO_CLASSES),
        "loading": before,
        "interpolate": first({"RIFE VFI"}),
        "steps": steps,
        "frames": 1,
    }


def _downstream_of(prompt: Mapping[str, Any], node_id: str, sources: list[str]) -> bool:
    """Whether ``node_id`` depends on any of ``sources`` (directly or not)."""
    seen, todo = set(), [node_id]
    while todo:
        current = todo.pop()
        for value in prompt[current]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt:
                if value[0] in sources:
                    return True
                if value[0] not in seen:
                    seen.add(value[0])
                    todo.append(value[0])
    return False
