"""``s2v``: a person's image and their speech (or song) → a video of them speaking it, as long as the
track: Wan 2.2 S2V-14B (fp8, one model), with the wav2vec2 audio encoder.

The first segment is ``WanSoundImageToVideo``; each further one is a ``WanSoundImageToVideoExtend``
given the segments so far (their latents joined in time: the node takes its motion from their end
and its audio window from their length) — recorded in s2v_3seg_*. Every segment's 20 latent frames
are sampled against 80 frames (5 s at 16 fps) of the audio, 4 per latent frame, so each must put 80
frames in the video or the picture runs 3 frames ahead of the sound: a further segment is decoded after two
latent frames of context (as the official code decodes after its motion frames), and the first
segment, which decodes to 77, holds its first frame for the 3 frames it lacks (docs/api.md, s2v).
Each segment is encoded on its own, so a long video never holds all its frames at once; the worker
joins them and adds the track (:mod:`worker.mux`). The model runs at 16 fps: the frame rate is fixed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from worker.errors import InvalidInput
from worker.graph import Graph
from worker.request.model import VideoRequest
from worker.tasks import common
from worker.tasks.base import FillInputs, HubFile, InputSlot, ModelSpec, SpeedPreset, Task

if TYPE_CHECKING:
    from worker.inputs.base import PreparedInput
    from worker.settings import Limits

#: Frames each segment is sampled as (20 latent frames), as ComfyUI's S2V template does (the model needs 73 or more).
SEGMENT_FRAMES = 77
#: Frames each segment puts in the video: 4 per latent frame, as many as its audio window.
EXTEND_FRAMES = 80
#: How long the first segment holds its first frame: the 1 frame of its first latent frame stands for 4.
HELD_FRAMES = EXTEND_FRAMES - SEGMENT_FRAMES
#: Latent frames of the previous segment decoded before a further one, and the frames they decode to.
CONTEXT_LATENTS, CONTEXT_FRAMES = 2, 5
#: The frame rate the model's audio windows assume.
FRAME_RATE = 16.0

MODEL = ModelSpec(
    "model", "diffusion_models", "wan2.2_s2v_14B_fp8_scaled.safetensors", "MODEL_S2V", "S2V-14B diffusion model",
    HubFile(common.REPACKAGED_22, "split_files/diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors"),
)  # fmt: skip
AUDIO_ENCODER = ModelSpec(
    "audio_encoder", "audio_encoders", "wav2vec2_large_english_fp16.safetensors", "MODEL_AUDIO_ENCODER", "wav2vec2 audio encoder",
    HubFile(common.REPACKAGED_22, "split_files/audio_encoders/wav2vec2_large_english_fp16.safetensors"),
)  # fmt: skip
#: ``speed: "4step"``: the T2V Lightning high-noise LoRA, as ComfyUI's S2V template uses it (4 steps, cfg 1).
FOUR_STEP = SpeedPreset(
    replaces=(),
    models=(
        ModelSpec(
            "speed_lora", "loras", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
            "MODEL_T2V_LORA_4STEP_HIGH_NOISE", "T2V 4-step LoRA (high-noise), used by s2v's 4step",
            HubFile(common.REPACKAGED_22, "split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"),
        ),
    ),  # fmt: skip
    defaults={"steps": 4, "cfg": 1.0},
    loras={"speed_lora": "model"},
)


def segments(length: int) -> list[int]:
    """The frames each segment puts in the video: up to :data:`EXTEND_FRAMES` each."""
    counts = [min(length, EXTEND_FRAMES)]
    while sum(counts) < length:
        counts.append(min(EXTEND_FRAMES, length - sum(counts)))
    return counts


def adapt(request: VideoRequest, prepared: Mapping[str, PreparedInput], limits: Limits) -> VideoRequest:
    """The length from the speech: a frame per 1/16 s."""
    seconds = prepared["audio"].seconds or 0.0
    if seconds > limits.max_s2v_seconds:
        raise InvalidInput(
            f"audio: {seconds:g} s is longer than task s2v makes (allowed: at most {limits.max_s2v_seconds:g} s "
            "(MAX_S2V_SECONDS); cut it with audio_start and audio_end)"
        )
    return replace(request, length=max(1, math.ceil(seconds * FRAME_RATE - 1e-6)))


def fill(graph: Graph, job: FillInputs) -> None:
    request = job.request
    common.fill_text(graph, job)
    common.fill_image(graph, job, "image", "ref_image")
    graph.set("model", unet_name=job.models["model"])
    graph.set("shift", shift=request.shift)
    graph.set("audio_encoder", audio_encoder_name=job.models["audio_encoder"])
    graph.set("load_audio", audio=job.inputs["audio"])
    graph.set("latent", width=request.width, height=request.height, length=SEGMENT_FRAMES)
    sampling = {
        "seed": request.seed, "steps": request.steps, "cfg": request.cfg, "sampler_name": request.sampler_name,
        "scheduler": request.scheduler, "denoise": 1.0,
    }  # fmt: skip
    graph.set("sampler", **sampling)
    counts = segments(request.length)
    graph.set("held_frames", amount=HELD_FRAMES)
    graph.set("trim_frames", batch_index=0, length=counts[0])
    common.fill_video_output(graph, job)
    for index, frames in enumerate(counts[1:], start=2):
        _add_segment(graph, job, index, frames, sampling)


def _add_segment(graph: Graph, job: FillInputs, index: int, frames: int, sampling: Mapping[str, object]) -> None:
    """Segment ``index``: extended from the segments so far, sampled, decoded after its context, encoded on its own."""
    previous = "sampler" if index == 2 else f"joined_{index - 1}"
    conditioning = {"positive": graph.link("positive_prompt"), "negative": graph.link("negative_prompt"), "vae": graph.link("vae")}
    suffix = f"_{index}"
    graph.splice(
        job.fragments["s2v_extend.json"],
        {
            "extend" + suffix: {
                **conditioning, "length": SEGMENT_FRAMES, "video_latent": graph.link(previous),
                "audio_encoder_output": graph.link("audio_features"), "ref_image": graph.link("resize_image"),
            },
            "sampler" + suffix: {"model": graph.link("shift"), **sampling},
            "joined" + suffix: {"samples1": graph.link(previous)},
            "context" + suffix: {"samples": graph.link("sampler" if index == 2 else f"sampler_{index - 1}")},
            "decode" + suffix: {"vae": graph.link("vae")},
            "trim_frames" + suffix: {"batch_index": CONTEXT_FRAMES, "length": frames},
            "video_output" + suffix: {**common.segment_video_widgets(graph), "filename_prefix": f"{job.filename_prefix}_{index}"},
        },
        suffix,
    )  # fmt: skip
    graph.set("context" + suffix, trim_amount=(SEGMENT_FRAMES - 1) // 4 + 1 - CONTEXT_LATENTS)
    graph.outputs.append("video_output" + suffix)


TASK = Task(
    name="s2v",
    summary="speech to video: an image speaks or sings the audio (Wan 2.2 S2V-14B)",
    workflow="wan22_s2v_14b.json",
    roles={
        **common.TEXT_ROLES,
        **common.image_roles("image"),
        "model": "UNETLoader",
        "shift": "ModelSamplingSD3",
        "audio_encoder": "AudioEncoderLoader",
        "load_audio": "LoadAudio",
        "audio_features": "AudioEncoderEncode",
        "latent": "WanSoundImageToVideo",
        "sampler": "KSampler",
        "held_frames": "RepeatImageBatch",
        "trim_frames": "ImageFromBatch",
    },
    models=(MODEL, AUDIO_ENCODER, common.TEXT_ENCODER, common.WAN21_VAE),
    inputs=(InputSlot("image", "image", required=True), InputSlot("audio", "audio", required=True)),
    options=(
        "width", "height", "steps", "cfg", "seed", "shift", "sampler_name", "scheduler", "resize", "video_format", "crf", "cache",
    ),  # fmt: skip
    defaults={
        "width": 640, "height": 640, "length": SEGMENT_FRAMES, "steps": 20, "cfg": 6.0, "frame_rate": FRAME_RATE,
        "shift": 8.0, "sampler_name": "uni_pc", "scheduler": "simple", "resize": "crop",
    },  # fmt: skip
    size_step=16,
    fill=fill,
    sampler_stages=common.segment_sampler_stages(segments),
    lora_targets={"both": ("model",)},
    final_models=("shift",),
    speeds={"4step": FOUR_STEP},
    adapt=adapt,
)
