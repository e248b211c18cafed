"""Pose preprocessing from a job's ``video``, inside the job's graph: ComfyUI's SDPose nodes find
each frame's keypoints (``SDPoseKeypointExtractor`` on the SDPose checkpoint), draw them as an
OpenPose-style skeleton on black (``SDPoseDrawKeypoints``) and, for Animate, cut a square crop
around the face of each frame (``SDPoseFaceBBoxes`` → ``CropByBBoxes``, 512×512, the size
``WanAnimateToVideo`` scales face videos to). Recorded: sdpose_pose_face_*, animate_pose_from_video_*.
"""

from __future__ import annotations

from worker.graph import Graph
from worker.tasks.base import FillInputs, HubFile, LoadedBy, ModelSpec

#: The jobs' word for "the worker draws the pose from the video" (task control's ``control``, and
#: what task animate's answer says when it did).
POSE = "pose"


def model(jobs: str) -> ModelSpec:
    """The SDPose whole-body checkpoint (SD 2 UNet with a keypoint heatmap head, and its VAE), loaded
    only by ``jobs`` (those whose ``control`` is ``pose``)."""
    return ModelSpec(
        "pose_model", "checkpoints", "sdpose_wholebody_fp16.safetensors", "MODEL_SDPOSE", "SDPose whole-body pose model",
        HubFile("Comfy-Org/SDPose", "checkpoints/sdpose_wholebody_fp16.safetensors"), LoadedBy("control", POSE, jobs),
    )  # fmt: skip


def add_pose(graph: Graph, job: FillInputs, frames: list[object]) -> list[object]:
    """The pose nodes on ``frames`` (a link to images); returns a link to the drawn pose frames, each
    the size of its frame."""
    graph.splice(job.fragments["pose.json"], {"pose_model": {"ckpt_name": job.models["pose_model"]}, "pose_keypoints": {"image": frames}})
    return graph.link("pose_drawn")


def add_face_crops(graph: Graph, job: FillInputs, frames: list[object]) -> list[object]:
    """The face of each frame of ``frames``, from the keypoints :func:`add_pose` found; returns a link."""
    graph.splice(job.fragments["face_crops.json"], {"face_boxes": {"keypoints": graph.link("pose_keypoints")}, "face_crops": {"image": frames}})
    return graph.link("face_crops")
