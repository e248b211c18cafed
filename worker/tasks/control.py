"""``control``: a prompt and a video whose edges (``control: "canny"``), pose (``"pose"``) or pictures
(``"video"``, a control video made elsewhere) steer a new video, optionally from a start image: Wan
2.2 Fun-Control A14B (fp8, the two experts with the lightx2v LoRA, as i2v). Recorded: fun_control_*
(and the pose nodes: sdpose_pose_face_*).

The video comes at the job's frame rate (:mod:`worker.inputs.video`) and is sized like an image
(``resize``); ``Canny`` (no model) draws its edges, the SDPose nodes its pose (:mod:`worker.tasks.pose`).
Its length follows the video (``fit: "video"``) unless the job gives ``length`` or ``duration``,
which the video must cover.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from worker.errors import InvalidInput
from worker.graph import Graph
from worker.request.model import VideoRequest
from worker.tasks import common, experts, pose
from worker.tasks.base import FillInputs, InputSlot, Task

if TYPE_CHECKING:
    from worker.inputs.base import PreparedInput
    from worker.settings import Limits

MODELS = (
    *experts.expert_models("fun_control", "Fun-Control"), common.TEXT_ENCODER, common.WAN21_VAE, experts.LIGHTX2V_LORA,
    *common.INTERPOLATION_MODELS.values(), pose.model('control "pose"'),
)  # fmt: skip
#: What the video gives the model: its edges, its pose, or its own frames (already a pose, depth or edge video).
CONTROLS = ("canny", pose.POSE, "video")
#: ``Canny``'s thresholds, as ComfyUI's Fun-Control template sets them.
CANNY_THRESHOLDS = {"low_threshold": 0.4, "high_threshold": 0.8}


def fill(graph: Graph, job: FillInputs) -> None:
    request = job.request
    common.fill_text(graph, job)
    common.fill_image(graph, job, "image", "ref_image")
    graph.set("load_video", file=job.inputs["video"])
    graph.set("resize_video", width=request.width, height=request.height, method=common.RESIZE_METHODS[request.resize or "crop"])
    if request.control == "canny":
        graph.set("canny", **CANNY_THRESHOLDS)
    else:
        graph.remove("canny")
        frames = graph.link("resize_video")
        graph.set("latent", control_video=pose.add_pose(graph, job, frames) if request.control == pose.POSE else frames)
    common.fill_latent(graph, job)
    experts.fill_experts(graph, job)
    common.fill_video_output(graph, job)


def adapt(request: VideoRequest, prepared: Mapping[str, PreparedInput], limits: Limits) -> VideoRequest:
    """A ``length`` the job asked for must not outlast the video: each frame follows one of its frames."""
    frames = prepared["video"].frames or 0
    if request.fit is None and request.length > frames:
        most = max(frames - 1, 0) // 4 * 4 + 1
        raise InvalidInput(
            f"options.length: {request.length} frames need {request.length} frames of video at {request.frame_rate:g} fps, "
            f"and the video gives {frames} ({prepared['video'].seconds or 0:g} s) (allowed: at most {most}, or no length: "
            "the video's own)"
        )
    return request


TASK = Task(
    name="control",
    summary="video to video: a video's edges or pictures steer a new one (Wan 2.2 Fun-Control A14B)",
    workflow="wan22_fun_control_14b_lightx2v.json",
    roles={
        **common.TEXT_ROLES, **common.image_roles("image"), "load_video": "LoadVideo", "video_frames": "GetVideoComponents",
        "resize_video": "ImageResize+", "canny": "Canny", "latent": "Wan22FunControlToVideo", **experts.ROLES,
    },  # fmt: skip
    models=MODELS,
    inputs=(InputSlot("video", "video", required=True), InputSlot("image", "image", required=False), common.AUDIO),
    options=(*common.COMMON_OPTIONS, *experts.OPTIONS, "resize", "control"),
    defaults={**experts.DEFAULTS, "frame_rate": 16.0, "control": "canny", "fit": "video"},
    size_step=16,
    fill=fill,
    sampler_stages=experts.sampler_stages,
    lora_targets=experts.LORA_TARGETS,
    final_models=experts.FINAL_MODELS,
    speeds={"4step": experts.four_step("i2v", "v1")},
    implied_by=("video", "image"),
    adapt=adapt,
    choices={"control": CONTROLS},
)
