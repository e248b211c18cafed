"""Stored API-format graphs, addressed by node role, and the per-job copy a task fills in.

Roles are the nodes' ``_meta.title`` in ``workflows/*.json``. Numeric node ids are never used: a
graph re-exported from ComfyUI's editor renumbers nodes but keeps titles. A role a task needs that
is missing (or present twice, or of the wrong class) fails at boot, not mid-job.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import WorkflowError


@dataclass(frozen=True)
class Template:
    """A stored graph with its role → node id map, checked once at load time."""

    graph: dict[str, Any]
    roles: dict[str, str]
    path: Path


def load_template(path: Path, roles: Mapping[str, str]) -> Template:
    """Read the graph and map each of ``roles`` (role → class_type) to its node; raise WorkflowError on any gap."""
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkflowError(f"cannot read the workflow {path}: {exc}") from exc
    if not isinstance(graph, dict):
        raise WorkflowError(f"{path} is not an API-format workflow (expected an object of nodes)")
    found: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        title = (node.get("_meta") or {}).get("title") if isinstance(node, dict) else None
        if title in roles:
            found.setdefault(title, []).append(node_id)
    problems = []
    for role, class_type in roles.items():
        ids = found.get(role, [])
        if len(ids) != 1:
            problems.append(f"role '{role}' found {len(ids)} times (expected once)")
        elif graph[ids[0]].get("class_type") != class_type:
            problems.append(f"role '{role}' is a {graph[ids[0]].get('class_type')}, expected {class_type}")
    if problems:
        raise WorkflowError(f"workflow {path} cannot be filled: " + "; ".join(problems))
    return Template(graph, {role: ids[0] for role, ids in found.items()}, path)


class Graph:
    """One job's copy of a template: set inputs, remove and add nodes, all by role."""

    def __init__(self, template: Template):
        self.prompt: dict[str, Any] = copy.deepcopy(template.graph)
        self.roles: dict[str, str] = dict(template.roles)
        #: The roles of the video nodes, in playing order: one, or one per segment of a video made in segments.
        self.outputs: list[str] = ["video_output"] if "video_output" in self.roles else []

    def inputs(self, role: str) -> dict[str, Any]:
        return self.prompt[self.roles[role]]["inputs"]

    def set(self, role: str, **values: Any) -> None:
        self.inputs(role).update(values)

    def link(self, role: str, output: int = 0) -> list[Any]:
        """A link to output ``output`` of the node ``role`` (``[node id, index]``)."""
        return [self.roles[role], output]

    def upstream(self, roles: Iterable[str]) -> set[str]:
        """Ids of every node the nodes of ``roles`` depend on, directly or not (not those nodes)."""
        found: set[str] = set()
        todo = [self.roles[role] for role in roles]
        while todo:
            for value in self.prompt[todo.pop()]["inputs"].values():
                if _is_link(value) and value[0] not in found:
                    found.add(value[0])
                    todo.append(value[0])
        return found - {self.roles[role] for role in roles}

    def remove(self, *roles: str) -> None:
        """Drop nodes; the caller unlinks whatever consumed them."""
        for role in roles:
            del self.prompt[self.roles.pop(role)]

    def splice(self, fragment: Template, connect: Mapping[str, Mapping[str, Any]], suffix: str = "") -> None:
        """Add a stored fragment's nodes under new ids (its inner links follow), its roles named with
        ``suffix`` (a fragment added more than once), then set the inputs ``connect`` names (role →
        {input: value}), typically links into this graph."""
        first = self._next_id()
        new_ids = {old: str(first + n) for n, old in enumerate(fragment.graph)}
        for old, node in fragment.graph.items():
            copied = copy.deepcopy(node)
            for name, value in copied["inputs"].items():
                if _is_link(value) and value[0] in new_ids:
                    copied["inputs"][name] = [new_ids[value[0]], value[1]]
            self.prompt[new_ids[old]] = copied
        self.roles.update({role + suffix: new_ids[node_id] for role, node_id in fragment.roles.items()})
        for role, values in connect.items():
            self.set(role, **values)

    def insert_after(self, role: str, fragment: Template, new_role: str, input_name: str, **values: Any) -> None:
        """Put the one-node ``fragment``, titled ``new_role``, between ``role`` and every node fed by
        ``role``'s first output: its ``input_name`` takes that output, and they take its output."""
        source = self.link(role)
        fed = [(node["inputs"], name) for node in self.prompt.values() for name, value in node["inputs"].items() if value == source]
        [template_id] = fragment.graph
        node = copy.deepcopy(fragment.graph[template_id])
        node["_meta"] = {**node.get("_meta", {}), "title": new_role}
        node["inputs"].update({input_name: source, **values})
        node_id = str(self._next_id())
        self.prompt[node_id] = node
        self.roles[new_role] = node_id
        for inputs, name in fed:
            inputs[name] = [node_id, 0]

    def _next_id(self) -> int:
        return max((int(k) for k in self.prompt if k.isdigit()), default=0) + 1


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


@dataclass(frozen=True)
class JobFiles:
    """Per-job names, so ComfyUI's cache can never hand back another job's output."""

    stem: str

    def input_name(self, field: str, suffix: str) -> str:
        """The uploaded name of the job's media given in ``field`` (``image`` → ``<stem>_image.png``)."""
        return f"{self.stem}_{field}{suffix}"

    @property
    def filename_prefix(self) -> str:
        return self.stem

    @property
    def folder(self) -> str:
        """The job's own folder in ComfyUI's output and temp folders (a job's own graph writes only there)."""
        return self.stem

    @property
    def last_frame_prefix(self) -> str:
        return f"{self.stem}_last"


def job_files(job_id: str) -> JobFiles:
    """Names unique to the job: a job-unique image and prefix make every run write its own file."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in job_id)[:64] or "job"
    # Local test runs reuse ids (``local_test``), so a random tail keeps names unique anyway.
    return JobFiles(f"wan22_{safe}_{uuid.uuid4().hex[:8]}")


#: Stored pieces of graph the worker adds to a task's graph when a job asks: file → role → class.
FRAGMENTS: dict[str, dict[str, str]] = {
    "last_frame.json": {"last_frame": "ImageFromBatch", "save_last_frame": "SaveImage"},
    "lora.json": {"lora": "LoraLoaderModelOnly"},
    "interpolate.json": {"interpolation_model": "FrameInterpolationModelLoader", "interpolate": "FrameInterpolate"},
    "compile.json": {"compile": "TorchCompileModel"},
    "easycache.json": {"cache": "EasyCache"},
    "audio.json": {"load_audio": "LoadAudio"},
    "pose.json": {"pose_model": "CheckpointLoaderSimple", "pose_keypoints": "SDPoseKeypointExtractor", "pose_drawn": "SDPoseDrawKeypoints"},
    "face_crops.json": {"face_boxes": "SDPoseFaceBBoxes", "face_crops": "CropByBBoxes"},
    "mask.json": {"mask_model": "CheckpointLoaderSimple", "mask_prompt": "CLIPTextEncode", "mask_track": "SAM3_VideoTrack",
                  "person_mask": "SAM3_TrackToMask"},
    "s2v_extend.json": {
        "extend": "WanSoundImageToVideoExtend", "sampler": "KSampler", "joined": "LatentConcat", "context": "TrimVideoLatent",
        "with_context": "LatentConcat", "decode": "VAEDecode", "trim_frames": "ImageFromBatch", "video_output": "VHS_VideoCombine",
    },
    "animate_segment.json": {
        "latent": "WanAnimateToVideo", "sampler": "KSampler", "trim_latent": "TrimVideoLatent", "decode": "VAEDecode",
        "trim_frames": "ImageFromBatch", "video_output": "VHS_VideoCombine",
    },
}


def load_fragments(folder: Path) -> dict[str, Template]:
    return {name: load_template(folder / name, roles) for name, roles in FRAGMENTS.items()}


def add_interpolation(graph: Graph, fragments: Mapping[str, Template], factor: int, model_name: str) -> None:
    """ComfyUI's frame interpolation between the decoded frames and the video node: the model file
    ``model_name`` (RIFE or FILM, ``models/frame_interpolation``) puts ``factor`` frames per frame,
    (n − 1) × factor + 1 in all (recorded in native_rife_*, native_film_*)."""
    frames = graph.inputs("video_output")["images"]
    graph.splice(
        fragments["interpolate.json"],
        {"interpolation_model": {"model_name": model_name}, "interpolate": {"images": frames, "multiplier": factor}},
    )
    graph.set("video_output", images=graph.link("interpolate"))


def add_cache(graph: Graph, fragments: Mapping[str, Template], roles: Sequence[str]) -> None:
    """``options.cache: "easy"``: an ``EasyCache`` on the model each of ``roles`` puts out, just before
    its sampler (recorded in easycache_*: each sampler then logs what it skipped)."""
    for role in roles:
        graph.insert_after(role, fragments["easycache.json"], f"cache_{role}", "model")


def add_compile(graph: Graph, fragments: Mapping[str, Template], roles: Sequence[str]) -> None:
    """``TORCH_COMPILE``: a ``TorchCompileModel`` (inductor) on the model each of ``roles`` puts out,
    after its LoRAs, just before its sampler."""
    for role in roles:
        graph.insert_after(role, fragments["compile.json"], f"compile_{role}", "model")


def add_last_frame(graph: Graph, fragments: Mapping[str, Template], prefix: str) -> None:
    """Save the video's last frame as a PNG: ``ImageFromBatch`` (index −1) of the frames the (last)
    video node encodes → ``SaveImage`` (recorded in flf2v_lora_lastframe_*)."""
    frames = graph.inputs(graph.outputs[-1])["images"]
    graph.splice(
        fragments["last_frame.json"], {"last_frame": {"image": frames}, "save_last_frame": {"filename_prefix": prefix}}
    )


def add_audio(graph: Graph, fragments: Mapping[str, Template], uploaded: str) -> None:
    """The job's audio track on the video: ``LoadAudio`` (the graph's own when it has one) into the video
    node's ``audio``, which VideoHelperSuite pads with silence or cuts to the video's length (recorded: s2v_*)."""
    if "load_audio" not in graph.roles:
        graph.splice(fragments["audio.json"], {})
    graph.set("load_audio", audio=uploaded)
    graph.set("video_output", audio=graph.link("load_audio"))
