"""``i2v``: a prompt and a start image → video, Wan 2.2 I2V-A14B (fp8, two experts, lightx2v LoRA).

The original worker's job and graph (``workflows/wan22_i2v_14b_lightx2v.json``): the image is
resized to the frame size and encoded by ``WanImageToVideo`` into the first frame of the latent.
"""

from __future__ import annotations

from worker.graph import Graph
from worker.tasks import common, experts
from worker.tasks.base import FillInputs, InputSlot, Task

MODELS = (*experts.expert_models("i2v"), common.TEXT_ENCODER, common.WAN21_VAE, experts.LIGHTX2V_LORA, *common.INTERPOLATION_MODELS.values())


def fill(graph: Graph, job: FillInputs) -> None:
    common.fill_text(graph, job)
    common.fill_image(graph, job, "image", "start_image")
    common.fill_latent(graph, job)
    experts.fill_experts(graph, job)
    common.fill_video_output(graph, job)


TASK = Task(
    name="i2v",
    summary="image to video (Wan 2.2 I2V-A14B)",
    workflow="wan22_i2v_14b_lightx2v.json",
    roles={**common.TEXT_ROLES, **common.image_roles("image"), "latent": "WanImageToVideo", **experts.ROLES},
    models=MODELS,
    inputs=(InputSlot("image", "image", required=True), common.AUDIO),
    options=(*common.COMMON_OPTIONS, *experts.OPTIONS, "resize"),
    defaults=experts.DEFAULTS,
    size_step=16,
    fill=fill,
    sampler_stages=experts.sampler_stages,
    lora_targets=experts.LORA_TARGETS,
    final_models=experts.FINAL_MODELS,
    speeds={"4step": experts.four_step("i2v", "v1")},
    implied_by=("image",),
)
