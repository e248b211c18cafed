"""Load the stored Wan 2.2 I2V graph and fill it with one job's values, by node role.

Roles are the nodes' ``_meta.title`` in ``workflows/wan22_i2v_14b_lightx2v.json``. Numeric node
ids are never used: a graph re-exported from ComfyUI's editor renumbers nodes, but keeps titles.
A role the worker needs that is missing (or present twice) fails loudly at boot, not mid-job.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_bootstrap.config import ModelFiles
from worker.errors import WorkflowError
from worker.request import RESIZE_METHODS, VideoRequest

#: Every role the worker injects into, with the class the node must have.
ROLES: dict[str, str] = {
    "input_image": "LoadImage",
    "resize_image": "ImageResize+",
    "text_encoder": "CLIPLoader",
    "positive_prompt": "CLIPTextEncode",
    "negative_prompt": "CLIPTextEncode",
    "vae": "VAELoader",
    "image_to_video": "WanImageToVideo",
    "model_high_noise": "UNETLoader",
    "model_low_noise": "UNETLoader",
    "lora_high_noise": "LoraLoaderModelOnly",
    "lora_low_noise": "LoraLoaderModelOnly",
    "shift_high_noise": "ModelSamplingSD3",
    "shift_low_noise": "ModelSamplingSD3",
    "sampler_high_noise": "KSamplerAdvanced",
    "sampler_low_noise": "KSamplerAdvanced",
    "decode": "VAEDecode",
    "video_output": "VHS_VideoCombine",
}

#: KSamplerAdvanced's ``end_at_step`` meaning "to the end" (ComfyUI's default).
TO_THE_END = 10000


@dataclass(frozen=True)
class WorkflowTemplate:
    """The stored graph with its role → node id map, checked once at load time."""

    graph: dict[str, Any]
    roles: dict[str, str]
    path: Path


@dataclass(frozen=True)
class FilledWorkflow:
    """A job's prompt, ready for ``POST /prompt``, and where each role sits in it."""

    prompt: dict[str, Any]
    roles: dict[str, str]


@dataclass(frozen=True)
class JobFiles:
    """Per-job names, so ComfyUI's cache can never hand back another job's video."""

    image_name: str
    filename_prefix: str


def load_template(path: Path) -> WorkflowTemplate:
    """Read the API-format graph and map roles to node ids; raise WorkflowError on any gap."""
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkflowError(f"cannot read the workflow {path}: {exc}") from exc
    if not isinstance(graph, dict):
        raise WorkflowError(f"{path} is not an API-format workflow (expected an object of nodes)")
    found: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        title = (node.get("_meta") or {}).get("title")
        if title in ROLES:
            found.setdefault(title, []).append(node_id)
    problems = []
    for role, class_type in ROLES.items():
        ids = found.get(role, [])
        if len(ids) != 1:
            problems.append(f"role '{role}' found {len(ids)} times (expected once)")
        elif graph[ids[0]].get("class_type") != class_type:
            problems.append(f"role '{role}' is a {graph[ids[0]].get('class_type')}, expected {class_type}")
    if problems:
        raise WorkflowError(f"workflow {path} cannot be filled: " + "; ".join(problems))
    return WorkflowTemplate(graph, {role: ids[0] for role, ids in found.items()}, path)


def fill_workflow(
    template: WorkflowTemplate,
    request: VideoRequest,
    files: JobFiles,
    models: ModelFiles,
    *,
    save_metadata: bool,
) -> FilledWorkflow:
    """Copy the template and set every value that depends on the job or the configuration."""
    prompt = copy.deepcopy(template.graph)

    def inputs(role: str) -> dict[str, Any]:
        return prompt[template.roles[role]]["inputs"]

    inputs("input_image")["image"] = files.image_name
    inputs("resize_image").update(width=request.width, height=request.height, method=RESIZE_METHODS[request.resize])
    inputs("text_encoder").update(clip_name=models.text_encoder, type="wan")
    inputs("positive_prompt")["text"] = request.prompt
    inputs("negative_prompt")["text"] = request.negative_prompt
    inputs("vae")["vae_name"] = models.vae
    inputs("image_to_video").update(width=request.width, height=request.height, length=request.length)
    inputs("model_high_noise")["unet_name"] = models.high_noise
    inputs("model_low_noise")["unet_name"] = models.low_noise
    for expert in ("high_noise", "low_noise"):
        inputs(f"lora_{expert}").update(lora_name=models.lora, strength_model=request.lora_strength)
        inputs(f"shift_{expert}")["shift"] = request.shift
        inputs(f"sampler_{expert}").update(
            noise_seed=request.seed,
            steps=request.steps,
            cfg=request.cfg,
            sampler_name=request.sampler_name,
            scheduler=request.scheduler,
        )
    # The high-noise expert lays out motion over [0, split) and hands its leftover noise to the
    # low-noise expert, which refines [split, end). Only the first sampler adds noise.
    inputs("sampler_high_noise").update(
        add_noise="enable", start_at_step=0, end_at_step=request.split_step, return_with_leftover_noise="enable"
    )
    inputs("sampler_low_noise").update(
        add_noise="disable", start_at_step=request.split_step, end_at_step=TO_THE_END, return_with_leftover_noise="disable"
    )
    inputs("video_output").update(
        frame_rate=float(request.frame_rate),
        filename_prefix=files.filename_prefix,
        format="video/h264-mp4",
        save_metadata=save_metadata,
    )
    return FilledWorkflow(prompt, dict(template.roles))


def job_files(job_id: str) -> JobFiles:
    """Names unique to the job: a job-unique image and prefix make every run write its own file."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in job_id)[:64] or "job"
    # Local test runs reuse ids (``local_test``), so a random tail keeps names unique anyway.
    stem = f"wan22_{safe}_{uuid.uuid4().hex[:8]}"
    return JobFiles(image_name=f"{stem}.png", filename_prefix=stem)
