"""``flf2v``: a prompt, an end image and optionally a start image → a video that ends (and starts) on them.

Wan 2.2 I2V-A14B with ``WanFirstLastFrameToVideo`` (recorded: ``flf2v_lora_lastframe_*``, and
``flf2v_end_only_*`` without a start image, where the start image's nodes are left out).
"""

from __future__ import annotations

from worker.graph import Graph
from worker.tasks import common, experts, i2v
from worker.tasks.base import FillInputs, InputSlot, Task


def fill(graph: Graph, job: FillInputs) -> None:
    common.fill_text(graph, job)
    common.fill_image(graph, job, "image", "start_image")
    common.fill_image(graph, job, "end_image", "end_image")
    common.fill_latent(graph, job)
    experts.fill_experts(graph, job)
    common.fill_video_output(graph, job)


TASK = Task(
    name="flf2v",
    summary="first and last frame to video (Wan 2.2 I2V-A14B)",
    workflow="wan22_flf2v_14b_lightx2v.json",
    roles={
        **common.TEXT_ROLES,
        **common.image_roles("image"),
        **common.image_roles("end_image"),
        "latent": "WanFirstLastFrameToVideo",
        **experts.ROLES,
    },
    models=i2v.MODELS,
    inputs=(InputSlot("image", "image", required=False), InputSlot("end_image", "image", required=True), common.AUDIO),
    options=i2v.TASK.options,
    defaults=experts.DEFAULTS,
    size_step=16,
    fill=fill,
    sampler_stages=experts.sampler_stages,
    lora_targets=experts.LORA_TARGETS,
    final_models=experts.FINAL_MODELS,
    speeds=i2v.TASK.speeds,
    implied_by=("end_image", "image"),
)
