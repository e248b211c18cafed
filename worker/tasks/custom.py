"""``custom``: a job that brings its own API-format graph (``workflow``), when the operator allows it
(``ALLOW_CUSTOM_WORKFLOW=true``), within :mod:`worker.tasks.custom_rules`.

The graph runs as given, with four exceptions: the job's ``prompt``, ``negative_prompt``, image and
seed go into the nodes whose ``_meta.title`` names their role (``positive_prompt``,
``negative_prompt``, ``load_image``, ``seed``), and every ``filename_prefix`` puts the node's files in
the job's own folder, so jobs never share files and the worker deletes the folder afterwards. The
answer carries the first video the graph made (VideoHelperSuite's ``gifs``, or core ``SaveVideo``'s
``images`` marked ``animated``: recorded in custom_savevideo.json), or its PNG images when it made
no video.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from comfy_bootstrap.errors import OutputMissing
from comfy_bootstrap.execution import RunResult
from worker.delivery import Artifact
from worker.encoding import by_extension
from worker.errors import InvalidInput
from worker.graph import JobFiles
from worker.inputs.base import PreparedInput
from worker.outputs import FileSource, OutputFile, read_png, read_video
from worker.plan import Collected, JobPlan, PlanContext, Upload
from worker.progress import ProgressPlan, loading_weights
from worker.request.model import CUSTOM_TASK, CustomRequest
from worker.tasks.base import InputSlot
from worker.tasks.custom_rules import check_files, check_outputs, first_few

if TYPE_CHECKING:
    from worker.pipeline import Runtime

log = logging.getLogger(__name__)

NAME = CUSTOM_TASK
#: The media a custom job may bring: one image, for the node titled ``load_image``.
INPUTS = (InputSlot("image", "image", required=False),)

#: Role titles the worker fills, with the inputs it sets (the first the node has).
ROLES: dict[str, tuple[str, ...]] = {
    "positive_prompt": ("text",),
    "negative_prompt": ("text",),
    "load_image": ("image",),
    "seed": ("seed", "noise_seed"),
}
#: The request field each filled role comes from, for the warning when no node has the role.
_GIVEN_AS = {"positive_prompt": "prompt", "negative_prompt": "negative_prompt", "load_image": "image"}

#: The folders whose files a job's answer may carry, in order of preference.
_FOLDERS = ("output", "temp")
#: Node classes whose progress is sampling steps.
SAMPLER_CLASSES = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
#: Node classes that write the video (the encode stage).
VIDEO_CLASSES = frozenset({"VHS_VideoCombine", "SaveVideo"})


@dataclass(frozen=True)
class CustomJob:
    """A job with its own graph: its classes checked, the job's values put in, its outputs found anywhere."""

    request: CustomRequest
    prepared: Mapping[str, PreparedInput]

    def describe(self) -> str:
        return f"your own workflow of {len(self.request.workflow)} nodes, seed {self.request.seed}"

    def check(self, runtime: Runtime) -> None:
        classes = runtime.node_classes()
        unknown = sorted({node["class_type"] for node in self.request.workflow.values()} - set(classes))
        if unknown:
            raise InvalidInput(
                f"workflow: node classes this ComfyUI does not have: {first_few(unknown, 10)} (allowed: the classes of "
                "ComfyUI v0.30.0 and of the node packs in this image: VideoHelperSuite, ComfyUI_essentials)"
            )
        check_outputs(self.request.workflow, frozenset(name for name, output in classes.items() if output))

    def plan(self, ctx: PlanContext) -> JobPlan:
        uploads = tuple(Upload.of(ctx.files, prepared) for prepared in self.prepared.values())
        image = next((upload.name for upload in uploads if upload.field == "image"), None)
        prompt, warnings = fill(self.request, image, ctx.files)
        check_files(prompt, frozenset(upload.name for upload in uploads))
        return JobPlan(
            prompt=prompt,
            uploads=uploads,
            progress=progress(prompt),
            outputs=CustomOutputs(),
            fields={"task": NAME, "seed": self.request.seed},
            warnings=tuple(warnings),
        )


def fill(request: CustomRequest, image_name: str | None, files: JobFiles) -> tuple[dict[str, Any], list[str]]:
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
            inputs["filename_prefix"] = f"{files.folder}/{files.stem}_{node_id}"
    warnings = [
        f"{field}: given, but no node of the workflow is titled {role!r}, so it was not used"
        for role, field in _GIVEN_AS.items()
        if values[role] is not None and role not in filled
    ]
    return prompt, warnings


class CustomOutputs:
    """The first video the graph reported (VHS ``gifs``, ``SaveVideo``'s animated ``images``), else its PNG images."""

    def collect(self, client: FileSource, run: RunResult, produced: list[OutputFile]) -> Collected:
        videos, pictures = find_outputs(run.outputs)
        produced.extend(videos + pictures)
        if videos:
            video = videos[0]
            artifacts = (Artifact("video", video.filename, read_video(client, video), video.format.content_type),)
            return Collected(artifacts, video.filename, len(videos), video.format.content_type)
        if pictures:
            artifacts = tuple(Artifact("images", p.filename, read_png(client, p), "image/png", listed=True) for p in pictures)
            return Collected(artifacts, pictures[0].filename, len(pictures), None)
        raise OutputMissing(f"your workflow finished but reported no video and no PNG image (outputs: {sorted(run.outputs)})")


def find_outputs(outputs: Mapping[str, Any]) -> tuple[list[OutputFile], list[OutputFile]]:
    """The videos the graph reported (VHS ``gifs``, ``SaveVideo``'s animated ``images``) and its PNG
    images: those saved as output first, then those kept in the temp folder (VHS with ``save_output`` off)."""
    videos, images = [], []
    for node_outputs in outputs.values():
        for entry in (node_outputs.get("gifs") or []) + (node_outputs.get("images") or []):
            if not isinstance(entry, dict) or not entry.get("filename") or entry.get("type", "output") not in _FOLDERS:
                continue
            name = str(entry["filename"])
            if by_extension(name) is not None:
                videos.append(OutputFile.from_entry(entry, "workflow"))
            elif name.lower().endswith(".png"):
                images.append(OutputFile.from_entry(entry))
    first = lambda file: _FOLDERS.index(file.folder_type)  # noqa: E731
    return sorted(videos, key=first), sorted(images, key=first)


def progress(prompt: Mapping[str, Any]) -> ProgressPlan:
    """Each sampler as a ``sampling`` stage of its own steps, the decoders and video writers, and the
    nodes that run before them (those no sampler feeds), found in one pass over the links."""
    of_class = lambda classes: tuple(nid for nid, node in prompt.items() if node["class_type"] in classes)  # noqa: E731
    samplers = list(of_class(SAMPLER_CLASSES))
    decode, encode, interpolate = of_class({"VAEDecode", "VAEDecodeTiled"}), of_class(VIDEO_CLASSES), of_class({"FrameInterpolate"})
    after = _downstream(prompt, samplers) | {*samplers, *decode, *encode, *interpolate}
    steps = [prompt[nid]["inputs"].get("steps") for nid in samplers]
    return ProgressPlan(
        samplers={nid: ("sampling", 0) for nid in samplers},
        decode=decode,
        encode=encode,
        loading=loading_weights(prompt, sorted(set(prompt) - after)),
        interpolate=next(iter(interpolate), None),
        steps=max((int(s) for s in steps if isinstance(s, int)), default=1),
        frames=1,
    )


def _downstream(prompt: Mapping[str, Any], sources: list[str]) -> set[str]:
    """Every node that depends on any of ``sources``, directly or not (a breadth-first walk over the reversed links)."""
    consumers: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        for value in node["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt:
                consumers.setdefault(value[0], []).append(node_id)
    seen: set[str] = set()
    todo = list(sources)
    while todo:
        for consumer in consumers.get(todo.pop(), ()):
            if consumer not in seen:
                seen.add(consumer)
                todo.append(consumer)
    return seen
