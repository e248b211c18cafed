"""``t2v``: a prompt alone → video, Wan 2.2 T2V-A14B (fp8, two experts, lightx2v LoRA).

The latent is an empty ``EmptyHunyuanLatentVideo`` and the prompts go straight to the samplers
(recorded: ``t2v_*``; the recording ran without LoRA, the worker adds the lightx2v step-distill
LoRA on both experts like the i2v graph, so the same 6-step, cfg 1 defaults apply).
"""

from __future__ import annotations

from worker.graph import Graph
from worker.tasks import common, experts
from worker.tasks.base import FillInputs, Task


def fill(graph: Graph, job: FillInputs) -> None:
    common.fill_text(graph, job)
    common.fill_latent(graph, job)
    experts.fill_experts(graph, job)
    common.fill_video_output(graph, job)


TASK = Task(
    name="t2v",
    summary="text to video (Wan 2.2 T2V-A14B)",
    workflow="wan22_t2v_14b_lightx2v.json",
    roles={**common.TEXT_ROLES, "latent": "EmptyHunyuanLatentVideo", **experts.ROLES},
    models=(*experts.expert_models("t2v"), common.TEXT_ENCODER, common.WAN21_VAE, experts.LIGHTX2V_LORA, *common.INTERPOLATION_MODELS.values()),
    inputs=(common.AUDIO,),
    options=(*common.COMMON_OPTIONS, *experts.OPTIONS),
    defaults={name: value for name, value in experts.DEFAULTS.items() if name != "resize"},
    size_step=16,
    fill=fill,
    sampler_stages=experts.sampler_stages,
    lora_targets=experts.LORA_TARGETS,
    final_models=experts.FINAL_MODELS,
    speeds={"4step": experts.four_step("t2v", "v1.1")},
)
