"""The person to replace, from a job's ``video``, inside the job's graph: ComfyUI's SAM 3.1 nodes
find "person" in the frames (``CLIPTextEncode`` with the checkpoint's own text encoder) and track
the most confident one (``SAM3_VideoTrack``, one object), and ``SAM3_TrackToMask`` gives its mask on
every frame. Recorded: animate_replace_from_video_*.
"""

from __future__ import annotations

from worker.graph import Graph
from worker.tasks.base import FillInputs, HubFile, LoadedBy, ModelSpec

#: The request's word for "the worker tracks the person in the video" (``VideoRequest.mask``).
TRACKED = "sam3"

MODEL = ModelSpec(
    "mask_model", "checkpoints", "sam3.1_multiplex_fp16.safetensors", "MODEL_SAM3", "SAM 3.1 segmentation model",
    HubFile("Comfy-Org/sam3.1", "checkpoints/sam3.1_multiplex_fp16.safetensors"),
    LoadedBy("mask", TRACKED, 'task animate, mode "replace" without mask_video'),
)  # fmt: skip


def add_mask(graph: Graph, job: FillInputs, frames: list[object]) -> list[object]:
    """The mask nodes on ``frames`` (a link to images); returns a link to the person's MASK, one per frame."""
    graph.splice(job.fragments["mask.json"], {"mask_model": {"ckpt_name": job.models["mask_model"]}, "mask_track": {"images": frames}})
    return graph.link("person_mask")
