"""Model files and fill steps the Wan 2.2 tasks share: text encoder, VAE, images, latent size, video output.

Each function fills the roles it names; a task's own module calls the ones its graph has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from worker.encoding import FORMAT_INPUTS
from worker.graph import Graph
from worker.request.model import VideoRequest
from worker.tasks.base import FillInputs, HubFile, InputSlot, LoadedBy, ModelSpec

REPACKAGED_22 = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
#: Comfy-Org's frame interpolation models for ComfyUI's own ``FrameInterpolationModelLoader``.
FRAME_INTERPOLATION = "Comfy-Org/frame_interpolation"

TEXT_ENCODER = ModelSpec(
    "text_encoder", "text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "MODEL_TEXT_ENCODER", "text encoder",
    HubFile(REPACKAGED_22, "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
)  # fmt: skip
WAN21_VAE = ModelSpec(
    "vae", "vae", "wan_2.1_vae.safetensors", "MODEL_VAE", "VAE",
    HubFile(REPACKAGED_22, "split_files/vae/wan_2.1_vae.safetensors"),
)  # fmt: skip


def _interpolation_model(name: str, file: str, label: str) -> ModelSpec:
    """The model of ``options.interpolate`` with ``interpolation_model: name``: only such jobs load it."""
    return ModelSpec(
        "interpolation_model", "frame_interpolation", file, f"MODEL_INTERPOLATION_{name.upper()}", label,
        HubFile(FRAME_INTERPOLATION, f"frame_interpolation/{file}"),
        LoadedBy("interpolation_model", name, f'options.interpolate with interpolation_model "{name}"'),
    )  # fmt: skip


#: The frame interpolation models a task with ``interpolate`` offers, by ``options.interpolation_model``
#: (the first is the default); ComfyUI's ``FrameInterpolate`` runs either.
INTERPOLATION_MODELS: dict[str, ModelSpec] = {
    "rife": _interpolation_model("rife", "rife_v4.26.safetensors", "RIFE 4.26 frame interpolation model"),
    "film": _interpolation_model("film", "film_net_fp16.safetensors", "FILM frame interpolation model"),
}

#: The roles every task's graph has, with their node classes.
TEXT_ROLES: dict[str, str] = {
    "text_encoder": "CLIPLoader",
    "positive_prompt": "CLIPTextEncode",
    "negative_prompt": "CLIPTextEncode",
    "vae": "VAELoader",
    "decode": "VAEDecode",
    "video_output": "VHS_VideoCombine",
}

#: A sound track any task takes: the video carries it (padded or cut to the video's length).
AUDIO = InputSlot("audio", "audio", required=False)

#: The user's word for fitting an image of another aspect ratio → ``ImageResize+``'s ``method``.
RESIZE_METHODS: dict[str, str] = {"crop": "fill / crop", "pad": "pad", "stretch": "stretch"}

#: The options every task takes (``options.<name>``); image tasks add ``resize``.
COMMON_OPTIONS: tuple[str, ...] = (
    "width", "height", "length", "steps", "cfg", "frame_rate", "seed", "shift", "sampler_name", "scheduler",
    "interpolate", "interpolation_model", "output_frame_rate", "video_format", "crf", "fit", "cache",
)  # fmt: skip


def image_roles(field: str) -> dict[str, str]:
    """The two nodes that bring in the image of request field ``field``: load, then resize."""
    return {f"load_{field}": "LoadImage", f"resize_{field}": "ImageResize+"}


def fill_text(graph: Graph, job: FillInputs) -> None:
    """Text encoder, both prompts, VAE."""
    graph.set("text_encoder", clip_name=job.models["text_encoder"], type="wan")
    graph.set("positive_prompt", text=job.request.prompt)
    graph.set("negative_prompt", text=job.request.negative_prompt)
    graph.set("vae", vae_name=job.models["vae"])


def fill_image(graph: Graph, job: FillInputs, field: str, latent_input: str) -> None:
    """The image of ``field`` resized to the frame size, or, when the job has none, its nodes removed
    and the latent node's ``latent_input`` unlinked (the input is optional there)."""
    request = job.request
    if field not in job.inputs:
        graph.remove(f"load_{field}", f"resize_{field}")
        graph.inputs("latent").pop(latent_input, None)
        return
    graph.set(f"load_{field}", image=job.inputs[field])
    graph.set(f"resize_{field}", width=request.width, height=request.height, method=RESIZE_METHODS[request.resize])


def fill_latent(graph: Graph, job: FillInputs) -> None:
    request = job.request
    graph.set("latent", width=request.width, height=request.height, length=request.length)


def fill_video_output(graph: Graph, job: FillInputs) -> None:
    """The video node: frame rate, file name, and the format with its own inputs (crf or bitrate)."""
    fmt, request = job.video_format, job.request
    inputs = graph.inputs("video_output")
    for name in FORMAT_INPUTS:
        inputs.pop(name, None)
    quality = {"crf": request.crf if request.crf is not None else fmt.crf[2]} if fmt.crf else {}
    graph.set(
        "video_output",
        frame_rate=float(request.video_frame_rate),
        filename_prefix=job.filename_prefix,
        format=fmt.vhs,
        save_metadata=job.save_metadata,
        **fmt.widgets,
        **quality,
    )


def segment_video_widgets(graph: Graph) -> dict[str, object]:
    """The first segment's video settings (format, quality, rate), for every later segment."""
    return {name: value for name, value in graph.inputs("video_output").items() if not isinstance(value, list)}


def segment_sampler_stages(segments: Callable[[int], list[int]]) -> Callable[[VideoRequest], Mapping[str, tuple[str, int]]]:
    """A task in segments: one sampler per segment (``sampler``, ``sampler_2``, …), its steps counted
    after those of the segments before it."""

    def stages(request: VideoRequest) -> Mapping[str, tuple[str, int]]:
        count = len(segments(request.length))
        return {("sampler" if k == 1 else f"sampler_{k}"): ("sampling", (k - 1) * request.steps) for k in range(1, count + 1)}

    return stages
