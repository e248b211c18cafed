"""The Wan 2.2 A14B pair of experts: a high-noise model lays out motion over the first steps and
hands its leftover noise to a low-noise model that refines the rest, each with the lightx2v
step-distill LoRA. The i2v, flf2v and t2v graphs share this half of the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.graph import Graph
from worker.request.model import VideoRequest
from worker.tasks.base import FillInputs, HubFile, ModelSpec, SpeedPreset
from worker.tasks.common import REPACKAGED_22

LIGHTX2V_LORA = ModelSpec(
    "lora", "loras", "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors", "MODEL_LORA",
    "step-distill LoRA", HubFile("Kijai/WanVideo_comfy", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"),
)  # fmt: skip

EXPERTS = ("high_noise", "low_noise")

#: Per expert: UNETLoader → LoraLoaderModelOnly (lightx2v) → ModelSamplingSD3 → KSamplerAdvanced.
ROLES: dict[str, str] = {
    f"{kind}_{expert}": class_type
    for expert in EXPERTS
    for kind, class_type in (
        ("model", "UNETLoader"),
        ("lora", "LoraLoaderModelOnly"),
        ("shift", "ModelSamplingSD3"),
        ("sampler", "KSamplerAdvanced"),
    )
}

#: The model each sampler takes: the expert after its LoRAs and shift.
FINAL_MODELS = tuple(f"shift_{expert}" for expert in EXPERTS)

#: Options only the dual-expert tasks take.
OPTIONS: tuple[str, ...] = ("split_step", "lora_strength")

#: The original worker's defaults: 6 distilled steps, cfg 1, shift 8.
DEFAULTS: dict[str, object] = {
    "width": 832, "height": 832, "length": 81, "steps": 6, "cfg": 1.0, "frame_rate": None,
    "shift": 8.0, "sampler_name": "euler", "scheduler": "simple", "lora_strength": 1.0, "resize": "crop",
}  # fmt: skip

#: A job's LoRAs go after the lightx2v LoRA of the expert(s) its ``target`` names.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "both": ("lora_high_noise", "lora_low_noise"),
    "high": ("lora_high_noise",),
    "low": ("lora_low_noise",),
}

#: KSamplerAdvanced's ``end_at_step`` meaning "to the end" (ComfyUI's default).
TO_THE_END = 10000


def expert_models(kind: str, label: str | None = None) -> tuple[ModelSpec, ModelSpec]:
    """The two expert files of a Wan 2.2 A14B model (``kind`` = ``i2v``, ``t2v``, ``fun_control``)."""
    env = "" if kind == "i2v" else f"{kind.upper()}_"
    return tuple(  # type: ignore[return-value]
        ModelSpec(
            expert, "diffusion_models", f"wan2.2_{kind}_{expert}_14B_fp8_scaled.safetensors", f"MODEL_{env}{expert.upper()}",
            f"{label or kind.upper()} {expert.replace('_', '-')} diffusion model",
            HubFile(REPACKAGED_22, f"split_files/diffusion_models/wan2.2_{kind}_{expert}_14B_fp8_scaled.safetensors"),
        )  # fmt: skip
        for expert in EXPERTS
    )


def four_step(kind: str, version: str) -> SpeedPreset:
    """``speed: "4step"``: the Wan 2.2 Lightning LoRAs of ``kind`` (``i2v`` or ``t2v``), one per expert,
    in place of the lightx2v LoRA; 2 + 2 steps at shift 5 (recorded: ``i2v4step_*``)."""
    env = "" if kind == "i2v" else f"{kind.upper()}_"
    loras = tuple(
        ModelSpec(
            f"lora_{expert}", "loras", f"wan2.2_{kind}_lightx2v_4steps_lora_{version}_{expert}.safetensors",
            f"MODEL_{env}LORA_4STEP_{expert.upper()}", f"{kind.upper()} 4-step LoRA ({expert.replace('_', '-')})",
            HubFile(REPACKAGED_22, f"split_files/loras/wan2.2_{kind}_lightx2v_4steps_lora_{version}_{expert}.safetensors"),
        )  # fmt: skip
        for expert in EXPERTS
    )
    return SpeedPreset(replaces=("lora",), models=loras, defaults={"steps": 4, "shift": 5.0, "cfg": 1.0})


def fill_experts(graph: Graph, job: FillInputs) -> None:
    """Both experts: model, LoRA (the expert's own under a speed preset), shift and their halves of the step schedule."""
    request = job.request
    split = request.split_step
    for expert in EXPERTS:
        graph.set(f"model_{expert}", unet_name=job.models[expert])
        lora = job.models.get(f"lora_{expert}") or job.models["lora"]
        graph.set(f"lora_{expert}", lora_name=lora, strength_model=request.lora_strength)
        graph.set(f"shift_{expert}", shift=request.shift)
        graph.set(
            f"sampler_{expert}",
            noise_seed=request.seed,
            steps=request.steps,
            cfg=request.cfg,
            sampler_name=request.sampler_name,
            scheduler=request.scheduler,
        )
    # Only the first sampler adds noise; it stops at the split and passes its leftover noise on.
    graph.set("sampler_high_noise", add_noise="enable", start_at_step=0, end_at_step=split, return_with_leftover_noise="enable")
    graph.set(
        "sampler_low_noise", add_noise="disable", start_at_step=split, end_at_step=TO_THE_END, return_with_leftover_noise="disable"
    )


def sampler_stages(request: VideoRequest) -> Mapping[str, tuple[str, int]]:
    return {"sampler_high_noise": ("high_noise", 0), "sampler_low_noise": ("low_noise", request.split_step or 0)}
