"""``animate``: the character of ``image`` performs the motion of a video (``mode: "move"``), or
replaces the person in ``video``, keeping its background and light (``"replace"``): Wan 2.2
Animate-14B with CLIP vision H, the lightx2v LoRA, and in replace ComfyUI's relight LoRA.

The motion comes from ``pose_video`` (and optionally ``face_video``) made by the job's own
preprocessing, or, without ``pose_video``, from ``video``: the graph draws its pose and cuts its
face with the SDPose nodes (:mod:`worker.tasks.pose`; the answer then says ``control: "pose"``).
Replace marks the person with ``mask_video``, or, without it, SAM 3.1 tracks the person in
``video`` (:mod:`worker.tasks.mask`; the answer says ``mask: "sam3"``). Each video is taken at
16 fps, and the node fits it to the frame, centred. The video is as long as the motion's: segments
of :data:`SEGMENT_FRAMES`, each further one a ``WanAnimateToVideo`` given the frames of the one
before (``continue_motion``: it redraws the last :data:`CONTINUED_FRAMES` of them, which it then
drops) and its place in the driving videos (``video_frame_offset``) — recorded in animate_2seg_*.
Each segment is decoded and encoded on its own; the worker joins them (:mod:`worker.mux`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from worker.errors import InvalidInput
from worker.graph import Graph
from worker.request.model import VideoRequest
from worker.tasks import common, experts, mask, pose
from worker.tasks.base import FillInputs, HubFile, InputSlot, LoadedBy, ModelSpec, Task

if TYPE_CHECKING:
    from worker.inputs.base import PreparedInput
    from worker.settings import Limits

#: Frames each segment samples, as ComfyUI's Animate template does.
SEGMENT_FRAMES = 77
#: Frames of the segment before that a further one continues from (``continue_motion_max_frames``).
CONTINUED_FRAMES = 5
#: The frame rate the model and its driving videos run at.
FRAME_RATE = 16.0
MODES = ("move", "replace")
#: The driving videos besides the motion's, and the mode each belongs to (None: either).
DRIVERS: dict[str, str | None] = {"face_video": None, "video": "replace", "mask_video": "replace"}
#: Without ``pose_video``, the pose and face are drawn from ``video`` with the SDPose model.
POSE_MODEL = pose.model("task animate without pose_video")

MODEL = ModelSpec(
    "model", "diffusion_models", "wan2.2_animate_14B_bf16.safetensors", "MODEL_ANIMATE", "Animate-14B diffusion model",
    HubFile(common.REPACKAGED_22, "split_files/diffusion_models/wan2.2_animate_14B_bf16.safetensors"),
)  # fmt: skip
CLIP_VISION = ModelSpec(
    "clip_vision", "clip_vision", "clip_vision_h.safetensors", "MODEL_CLIP_VISION", "CLIP vision H",
    HubFile("Comfy-Org/Wan_2.1_ComfyUI_repackaged", "split_files/clip_vision/clip_vision_h.safetensors"),
)  # fmt: skip
RELIGHT_LORA = ModelSpec(
    "relight_lora", "loras", "wan/WanAnimate_relight_lora_fp16.safetensors", "MODEL_ANIMATE_RELIGHT_LORA",
    "Animate relight LoRA (replace)", HubFile("Kijai/WanVideo_comfy", "LoRAs/Wan22_relight/WanAnimate_relight_lora_fp16.safetensors"),
    loaded_by=LoadedBy("mode", "replace", 'mode "replace"'),
)  # fmt: skip


def segments(frames: int) -> list[int]:
    """The frames each segment puts in the video: the first up to :data:`SEGMENT_FRAMES`, each further
    one up to that less the frames it continues from."""
    counts = [min(frames, SEGMENT_FRAMES)]
    while sum(counts) < frames:
        counts.append(min(SEGMENT_FRAMES - CONTINUED_FRAMES, frames - sum(counts)))
    return counts


def sampled(count: int, continued: int) -> int:
    """The 4n+1 frames a segment samples to put ``count`` new frames after ``continued`` redrawn ones."""
    return 4 * math.ceil((count + continued - 1) / 4) + 1


def adapt(request: VideoRequest, prepared: Mapping[str, PreparedInput], limits: Limits) -> VideoRequest:
    """The length from the motion (``pose_video``, else ``video``: every frame of it, in segments); the
    videos of the mode there, each as long as the motion; ``control: "pose"`` when the graph draws the
    pose, ``mask: "sam3"`` when it tracks the person to replace."""
    motion = "pose_video" if "pose_video" in prepared else "video"
    if motion not in prepared:
        raise InvalidInput("pose_video: missing (allowed: pose_video or pose_video_url, or video or video_url to draw the pose from)")
    frames = prepared[motion].frames or 0
    for field, mode in DRIVERS.items():
        if field in prepared and mode not in (None, request.mode) and field != motion:
            instead = " or in place of pose_video" if field == "video" else ""
            raise InvalidInput(f"{field}: given with mode {request.mode!r} (allowed: only with mode {mode!r}{instead})")
        if field in prepared and (prepared[field].frames or 0) < frames:
            raise InvalidInput(
                f"{field}: {prepared[field].frames} frames at {FRAME_RATE:g} fps, fewer than {motion}'s {frames} "
                f"(allowed: as long as {motion}; cut {motion} with {motion}_end)"
            )
    if request.mode == "replace" and "video" not in prepared:
        raise InvalidInput("video: missing, which mode 'replace' needs (allowed: video or video_url)")
    if frames / FRAME_RATE > limits.max_animate_seconds:
        raise InvalidInput(
            f"{motion}: {frames / FRAME_RATE:g} s is longer than task animate makes (allowed: at most "
            f"{limits.max_animate_seconds:g} s (MAX_ANIMATE_SECONDS); cut it with {motion}_start and {motion}_end)"
        )
    tracked = mask.TRACKED if request.mode == "replace" and "mask_video" not in prepared else None
    return replace(request, length=frames, control=pose.POSE if motion == "video" else None, mask=tracked)


def fill(graph: Graph, job: FillInputs) -> None:
    """The reference image, the driving videos given (``WanAnimateToVideo`` fits each to the frame,
    centred), the relight LoRA in replace, and the segments."""
    request, size = job.request, {"width": job.request.width, "height": job.request.height}
    common.fill_text(graph, job)
    common.fill_image(graph, job, "image", "reference_image")
    graph.set("clip_vision", clip_name=job.models["clip_vision"])
    graph.set("model", unet_name=job.models["model"])
    graph.set("lora", lora_name=job.models["lora"], strength_model=request.lora_strength)
    if "relight_lora" in job.models:
        graph.insert_after("lora", job.fragments["lora.json"], "relight_lora", "model", lora_name=job.models["relight_lora"], strength_model=1.0)
    graph.set("shift", shift=request.shift)
    for field, (nodes, latent_input) in _DRIVER_NODES.items():
        if field in job.inputs:
            graph.set(f"load_{field}", file=job.inputs[field])
        else:
            graph.remove(*nodes)
            graph.inputs("latent").pop(latent_input)
    if request.mode != "replace":  # the video, if any, is only where the pose comes from
        graph.inputs("latent").pop("background_video", None)
    if request.control == pose.POSE:
        graph.set("latent", pose_video=pose.add_pose(graph, job, graph.link("video_frames")))
        if "face_video" not in job.inputs:
            graph.set("latent", face_video=pose.add_face_crops(graph, job, graph.link("video_frames")))
    if request.mask == mask.TRACKED:
        graph.set("latent", character_mask=mask.add_mask(graph, job, graph.link("video_frames")))
    sampling = {
        "seed": request.seed, "steps": request.steps, "cfg": request.cfg, "sampler_name": request.sampler_name,
        "scheduler": request.scheduler,
    }  # fmt: skip
    counts = segments(request.length)
    graph.set("latent", **size, length=sampled(counts[0], 0))
    graph.set("sampler", **sampling)
    graph.set("trim_frames", length=counts[0])
    common.fill_video_output(graph, job)
    for index, count in enumerate(counts[1:], start=2):
        _add_segment(graph, job, index, count, sampling, size)


#: Each optional driving video's nodes, and the latent's input it feeds: removed when not given.
_DRIVER_NODES: dict[str, tuple[tuple[str, ...], str]] = {
    "pose_video": (("load_pose_video", "pose_frames"), "pose_video"),
    "face_video": (("load_face_video", "face_frames"), "face_video"),
    "video": (("load_video", "video_frames"), "background_video"),
    "mask_video": (("load_mask_video", "mask_frames", "character_mask"), "character_mask"),
}


def _add_segment(
    graph: Graph, job: FillInputs, index: int, count: int, sampling: Mapping[str, object], size: Mapping[str, int]
) -> None:
    """Segment ``index``: continued from the frames of the one before, at its place in the driving videos."""
    previous = "" if index == 2 else f"_{index - 1}"
    first = graph.inputs("latent")
    shared = {name: value for name, value in first.items() if isinstance(value, list)}
    suffix = f"_{index}"
    graph.splice(
        job.fragments["animate_segment.json"],
        {
            "latent" + suffix: {
                **shared, **size, "length": sampled(count, CONTINUED_FRAMES), "continue_motion": graph.link("decode" + previous),
                "video_frame_offset": graph.link("latent" + previous, 5),
            },
            "sampler" + suffix: {"model": graph.link("shift"), **sampling},
            "decode" + suffix: {"vae": graph.link("vae")},
            "trim_frames" + suffix: {"length": count},
            "video_output" + suffix: {**common.segment_video_widgets(graph), "filename_prefix": f"{job.filename_prefix}_{index}"},
        },
        suffix,
    )  # fmt: skip
    graph.outputs.append("video_output" + suffix)


TASK = Task(
    name="animate",
    summary="your character performs a pose video's motion, or replaces the person in a video (Wan 2.2 Animate-14B)",
    workflow="wan22_animate_14b.json",
    roles={
        **common.TEXT_ROLES, **common.image_roles("image"), "model": "UNETLoader", "lora": "LoraLoaderModelOnly",
        "shift": "ModelSamplingSD3", "clip_vision": "CLIPVisionLoader", "clip_vision_encode": "CLIPVisionEncode",
        "load_pose_video": "LoadVideo", "pose_frames": "GetVideoComponents", "load_face_video": "LoadVideo",
        "face_frames": "GetVideoComponents", "load_video": "LoadVideo", "video_frames": "GetVideoComponents",
        "load_mask_video": "LoadVideo", "mask_frames": "GetVideoComponents", "character_mask": "ImageToMask", "latent": "WanAnimateToVideo", "sampler": "KSampler", "trim_latent": "TrimVideoLatent",
        "trim_frames": "ImageFromBatch",
    },  # fmt: skip
    models=(MODEL, CLIP_VISION, common.TEXT_ENCODER, common.WAN21_VAE, experts.LIGHTX2V_LORA, RELIGHT_LORA, POSE_MODEL, mask.MODEL),
    inputs=(
        InputSlot("video", "video", required=False), InputSlot("pose_video", "video", required=False),
        InputSlot("face_video", "video", required=False), InputSlot("mask_video", "video", required=False),
        InputSlot("image", "image", required=True), common.AUDIO,
    ),  # fmt: skip
    options=(
        "width", "height", "steps", "cfg", "seed", "shift", "sampler_name", "scheduler", "lora_strength", "resize", "video_format",
        "crf", "mode", "cache",
    ),  # fmt: skip
    defaults={
        "width": 832, "height": 480, "length": SEGMENT_FRAMES, "steps": 6, "cfg": 1.0, "frame_rate": FRAME_RATE, "shift": 8.0,
        "sampler_name": "euler", "scheduler": "simple", "lora_strength": 1.0, "resize": "crop", "mode": "move",
    },  # fmt: skip
    size_step=16,
    fill=fill,
    sampler_stages=common.segment_sampler_stages(segments),
    lora_targets={"both": ("lora",)},
    final_models=("shift",),
    implied_by=("pose_video", "video", "image"),
    adapt=adapt,
    choices={"mode": MODES},
)
