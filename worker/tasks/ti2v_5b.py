"""``ti2v-5b``: a prompt and optionally a start image → video, Wan 2.2 TI2V-5B (one fp16 model).

One ``KSampler`` over ``Wan22ImageToVideoLatent`` with the Wan 2.2 VAE (recorded:
``ti2v5b_with_image_*``, ``ti2v5b_no_image_*``); sizes are multiples of 32 (the VAE compresses
16× and the model patches 2×). Fits 24 GB cards. Its defaults are the model's own: 1280×704,
121 frames at 24 fps, 20 steps, cfg 5, uni_pc.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.graph import Graph
from worker.request.model import VideoRequest
from worker.tasks import common
from worker.tasks.base import FillInputs, HubFile, InputSlot, ModelSpec, Task

MODEL = ModelSpec(
    "model", "diffusion_models", "wan2.2_ti2v_5B_fp16.safetensors", "MODEL_TI2V_5B", "TI2V-5B diffusion model",
    HubFile(common.REPACKAGED_22, "split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors"),
)  # fmt: skip
VAE = ModelSpec(
    "vae", "vae", "wan2.2_vae.safetensors", "MODEL_TI2V_5B_VAE", "Wan 2.2 VAE",
    HubFile(common.REPACKAGED_22, "split_files/vae/wan2.2_vae.safetensors"),
)  # fmt: skip


def fill(graph: Graph, job: FillInputs) -> None:
    request = job.request
    common.fill_text(graph, job)
    common.fill_image(graph, job, "image", "start_image")
    common.fill_latent(graph, job)
    graph.set("model", unet_name=job.models["model"])
    graph.set("shift", shift=request.shift)
    graph.set(
        "sampler",
        seed=request.seed,
        steps=request.steps,
        cfg=request.cfg,
        sampler_name=request.sampler_name,
        scheduler=request.scheduler,
        denoise=1.0,
    )
    common.fill_video_output(graph, job)


def sampler_stages(request: VideoRequest) -> Mapping[str, tuple[str, int]]:
    return {"sampler": ("sampling", 0)}


TASK = Task(
    name="ti2v-5b",
    summary="text or image to video (Wan 2.2 TI2V-5B)",
    workflow="wan22_ti2v_5b.json",
    roles={
        **common.TEXT_ROLES,
        **common.image_roles("image"),
        "latent": "Wan22ImageToVideoLatent",
        "model": "UNETLoader",
        "shift": "ModelSamplingSD3",
        "sampler": "KSampler",
    },
    models=(MODEL, common.TEXT_ENCODER, VAE, *common.INTERPOLATION_MODELS.values()),
    inputs=(InputSlot("image", "image", required=False), common.AUDIO),
    options=(*common.COMMON_OPTIONS, "resize"),
    defaults={
        "width": 1280, "height": 704, "length": 121, "steps": 20, "cfg": 5.0, "frame_rate": 24.0,
        "shift": 8.0, "sampler_name": "uni_pc", "scheduler": "simple", "resize": "crop",
    },  # fmt: skip
    size_step=32,
    fill=fill,
    sampler_stages=sampler_stages,
    lora_targets={"both": ("model",)},
    final_models=("shift",),
)
