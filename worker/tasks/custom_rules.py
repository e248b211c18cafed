"""What a job's own graph may hold (``ALLOW_CUSTOM_WORKFLOW``), checked before anything runs.

An allow-list of node classes (:data:`ALLOWED_NODES`, widened by ``CUSTOM_WORKFLOW_NODES``), the
output nodes whose files the worker collects (:data:`COLLECTED_OUTPUTS`), values that are plain JSON
or links, numbers within the tasks' limits (:data:`NUMBER_BOUNDS`), a node count, and loaders that
read only the job's own uploads (:data:`FILE_INPUTS`). Why each rule: docs/deployment.md, Security.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from comfy_bootstrap.errors import PromptRejected
from worker.request.options import MAX_INTERPOLATE
from worker.request.rules import Problems, shown

if TYPE_CHECKING:
    from worker.settings import Limits, Settings

#: ``CUSTOM_WORKFLOW_NODES=*``: every class this ComfyUI has (the operator trusts the callers).
ANY_NODE = "*"

#: The output nodes the worker collects files from; a graph may use no other.
COLLECTED_OUTPUTS = frozenset({"SaveImage", "SaveVideo", "VHS_VideoCombine"})

#: The classes a job's own graph may use by default: those of the stored graphs and fragments,
#: and pure model-loading, conditioning, sampling, latent, image, audio and video nodes. None of
#: them reads or writes a path of the caller's choosing, fetches a URL, saves a model or a latent,
#: or evaluates an expression (docs/api.md lists them).
ALLOWED_NODES = COLLECTED_OUTPUTS | frozenset({
    # models, from the model folders' lists
    "UNETLoader", "CLIPLoader", "VAELoader", "CLIPVisionLoader", "LoraLoaderModelOnly", "AudioEncoderLoader",
    "FrameInterpolationModelLoader", "CheckpointLoaderSimple", "ModelSamplingSD3", "TorchCompileModel", "EasyCache",
    # conditioning
    "CLIPTextEncode", "CLIPVisionEncode", "AudioEncoderEncode", "ConditioningCombine", "ConditioningConcat",
    "ConditioningAverage", "ConditioningSetTimestepRange", "ConditioningZeroOut",
    "WanImageToVideo", "WanFirstLastFrameToVideo", "Wan22ImageToVideoLatent", "WanSoundImageToVideo",
    "WanSoundImageToVideoExtend", "WanAnimateToVideo", "Wan22FunControlToVideo", "WanFunControlToVideo",
    # pose and mask preprocessing
    "SDPoseKeypointExtractor", "SDPoseDrawKeypoints", "SDPoseFaceBBoxes", "CropByBBoxes", "SAM3_VideoTrack", "SAM3_TrackToMask",
    # sampling
    "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "KSamplerSelect", "BasicScheduler",
    "RandomNoise", "DisableNoise", "CFGGuider", "BasicGuider", "SplitSigmas",
    # latents
    "EmptyHunyuanLatentVideo", "EmptyLatentImage", "LatentConcat", "TrimVideoLatent", "VAEDecode", "VAEDecodeTiled",
    "VAEEncode",
    # images
    "LoadImage", "ImageResize+", "ImageScale", "ImageCrop", "ImageFlip", "ImageInvert", "ImageBatch",
    "RepeatImageBatch", "ImageFromBatch", "ImageBlend", "ImageSharpen", "ImageCompositeMasked", "EmptyImage",
    "GetImageSize", "Canny", "ImageToMask",
    # video and sound
    "LoadVideo", "GetVideoComponents", "CreateVideo", "FrameInterpolate", "LoadAudio", "TrimAudioDuration",
})  # fmt: skip

#: Loader classes and the input naming their file: it must be one of the job's own uploads (a
#: name ComfyUI resolves in the input folder — or, annotated ``[output]``, in another job's files).
FILE_INPUTS: dict[str, str] = {"LoadImage": "image", "LoadAudio": "audio", "LoadVideo": "file"}


@dataclass(frozen=True)
class Bound:
    """The most a number of that name may be, and the variable that sets it (None: fixed)."""

    limit: Callable[[Limits], float]
    setting: str | None


#: The largest value of each sizing input a graph may set: what the tasks allow (by input name).
NUMBER_BOUNDS: dict[str, Bound] = {
    "width": Bound(lambda limits: limits.max_width, "MAX_WIDTH"),
    "height": Bound(lambda limits: limits.max_height, "MAX_HEIGHT"),
    "length": Bound(lambda limits: limits.max_length, "MAX_LENGTH"),
    "amount": Bound(lambda limits: limits.max_length, "MAX_LENGTH"),
    "batch_size": Bound(lambda _limits: 1, None),
    "steps": Bound(lambda limits: limits.max_steps, "MAX_STEPS"),
    "fps": Bound(lambda limits: limits.max_frame_rate, "MAX_FRAME_RATE"),
    "frame_rate": Bound(lambda limits: limits.max_frame_rate, "MAX_FRAME_RATE"),
    "multiplier": Bound(lambda _limits: MAX_INTERPOLATE, None),
    "duration": Bound(lambda limits: limits.max_audio_seconds, "MAX_AUDIO_SECONDS"),
}
#: Inputs named like a size that only pick from what exists (ImageFromBatch's default length is 4096).
SELECTIONS = frozenset({("ImageFromBatch", "length")})

_VALUES = "text, a number, true or false, or a link [node id, output index]"
#: Nodes named in one refusal before the rest are counted.
_NAMED = 5


def check_graph(workflow: Mapping[str, Any], settings: Settings, problems: Problems) -> None:
    """The graph's size, classes and values, before anything is fetched or run: a class not allowed
    is refused at once (``workflow_rejected``); every other problem goes to ``problems``."""
    if len(workflow) > settings.max_workflow_nodes:
        problems.add("workflow", f"{len(workflow)} nodes is too many", f"at most {settings.max_workflow_nodes} (MAX_WORKFLOW_NODES)")
        return
    refuse_classes(
        [(node_id, node["class_type"]) for node_id, node in workflow.items() if not allowed(node["class_type"], settings)],
        "classes a job's own graph may not use on this worker",
        "the classes listed in docs/api.md#your-own-graph; the operator adds others with CUSTOM_WORKFLOW_NODES",
    )
    for node_id, node in workflow.items():
        meta = node.get("_meta")
        if meta is not None and not (isinstance(meta, dict) and isinstance(meta.get("title", ""), str)):
            problems.add(f"workflow.{shown_id(node_id)}._meta", f"{shown(meta)} is not an object with a text title", 'an object such as {"title": "seed"}')
        for name, value in node["inputs"].items():
            _check_value(workflow, node_id, node["class_type"], str(name), value, settings.limits, problems)


def check_outputs(workflow: Mapping[str, Any], output_classes: frozenset[str]) -> None:
    """Refuse output nodes whose files the worker would not collect (and so could not delete)."""
    refuse_classes(
        [(node_id, node["class_type"]) for node_id, node in workflow.items()
         if node["class_type"] in output_classes and node["class_type"] not in COLLECTED_OUTPUTS],
        "output nodes whose files the worker does not collect",
        ", ".join(sorted(COLLECTED_OUTPUTS)),
    )  # fmt: skip


def check_files(prompt: Mapping[str, Any], uploads: frozenset[str]) -> None:
    """Every loader reads one of the job's own uploads (the worker fills the titled node)."""
    problems = Problems()
    for node_id, node in prompt.items():
        name = FILE_INPUTS.get(node["class_type"])
        value = node["inputs"].get(name) if name else None
        if name and not isinstance(value, list) and value not in uploads:
            problems.add(
                f"workflow.{shown_id(node_id)}.inputs.{name}", f"{shown(value)} is not a file of this job",
                "the job's own media, which the worker puts into the node titled load_image",
            )  # fmt: skip
    if len(problems):
        raise PromptRejected(problems.text())


def allowed(class_type: str, settings: Settings) -> bool:
    extra = settings.custom_workflow_nodes
    return class_type in ALLOWED_NODES or class_type in extra or ANY_NODE in extra


def refuse_classes(found: list[tuple[str, str]], what: str, allowed_text: str) -> None:
    if found:
        named = first_few([f"node {shown_id(node_id)} ({shown(class_type)})" for node_id, class_type in found], _NAMED)
        raise PromptRejected(f"workflow: {named}: {what} (allowed: {allowed_text})")


def first_few(items: list[str], limit: int) -> str:
    """The first ``limit`` of ``items``, comma-separated, and how many more: a refusal stays short."""
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def shown_id(node_id: object) -> str:
    text = str(node_id)
    return text if len(text) <= 20 else text[:19] + "…"


def _check_value(
    workflow: Mapping[str, Any], node_id: str, class_type: str, name: str, value: object, limits: Limits, problems: Problems
) -> None:
    where = f"workflow.{shown_id(node_id)}.inputs.{shown_id(name)}"
    if isinstance(value, list):
        if not _is_link(value, workflow):
            problems.add(where, f"{shown(value)} is not a link to a node of the graph", _VALUES)
        return
    if isinstance(value, dict) or not isinstance(value, (str, int, float, bool)):
        problems.add(where, f"{shown(value)} is not a plain value", _VALUES)
        return
    if isinstance(value, float) and not math.isfinite(value):
        problems.add(where, f"{shown(value)} is not a finite number", _VALUES)
        return
    bound = NUMBER_BOUNDS.get(name)
    if bound is None or (class_type, name) in SELECTIONS or isinstance(value, (bool, str)):
        return
    limit = bound.limit(limits)
    if value > limit:
        problems.add(where, f"{shown(value)} is above what tasks allow", f"at most {limit:g}" + (f" ({bound.setting})" if bound.setting else ""))


def _is_link(value: list[Any], workflow: Mapping[str, Any]) -> bool:
    return (
        len(value) == 2 and isinstance(value[0], str) and value[0] in workflow
        and isinstance(value[1], int) and not isinstance(value[1], bool) and 0 <= value[1] < 64
    )  # fmt: skip
