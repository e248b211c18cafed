"""A stored task's job: its model files checked, its graph filled (with the job's LoRAs, compile,
interpolation and last frame), its progress stages and outputs named by role.

The task modules say *what* their graph is (:class:`worker.tasks.base.Task`); this module turns
one validated request of a task into the :class:`~worker.plan.JobPlan` the pipeline runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from comfy_bootstrap.execution import RunResult
from worker import encoding, step_cache
from worker.delivery import Artifact
from worker.encoding import VideoFormat
from worker.graph import Graph, JobFiles, add_audio, add_cache, add_compile, add_interpolation, add_last_frame
from worker.inputs.base import PreparedInput
from worker.loras import AppliedLora
from worker.loras import add_to_graph as add_loras
from worker.loras import resolve as resolve_loras
from worker.loras import warnings_from_log as lora_warnings
from worker.model_files import check_model_files
from worker.mux import join_segments
from worker.outputs import FileSource, OutputFile, audio_track, find_image, find_videos, read_png, read_video
from worker.plan import Collected, JobPlan, PlanContext, Upload
from worker.progress import PREPROCESS_CLASSES, ProgressPlan, loading_weights
from worker.request.model import DEFAULT_SPEED, VideoRequest
from worker.tasks.base import FillInputs, Task

if TYPE_CHECKING:
    from worker.pipeline import Runtime


@dataclass(frozen=True)
class StoredJob:
    """One job of a stored task."""

    task: Task
    request: VideoRequest
    prepared: Mapping[str, PreparedInput]

    def describe(self) -> str:
        request = self.request
        media = {name: given.description for name, given in self.prepared.items()} or "none"
        return (
            f"task {self.task.name}, {request.width}x{request.height}, {request.length} frames, {request.steps} steps, "
            f"seed {request.seed}, images {media}"
        )

    def check(self, runtime: Runtime) -> None:
        """The task's model files (at the job's speed) listed by ComfyUI and whole on the volume."""
        settings, task, request = runtime.settings, self.task, self.request
        model_files = task.model_files(settings.model_names, request.speed, request)
        named = [f"task {task.name}", *([f"mode {request.mode}"] if request.mode else []),
                 *([f"speed {request.speed}"] if request.speed != DEFAULT_SPEED else []),
                 *([f"interpolation_model {request.interpolation_model}"] if request.interpolation_model else [])]  # fmt: skip
        subject = ", ".join(named) + ": "
        runtime.check_models(model_files, subject=subject)
        check_model_files(settings.comfy, task.name, model_files)

    def plan(self, ctx: PlanContext) -> JobPlan:
        runtime, request, task = ctx.runtime, self.request, self.task
        loras = resolve_loras(request.loras, lambda: runtime.client.list_models("loras"), ctx.fetched, runtime.settings.comfy)
        if loras:
            ctx.timer.lap("loras")
        video_format, format_warning = encoding.choose(request.video_format)
        uploads = tuple(Upload.of(ctx.files, prepared) for prepared in self.prepared.values())
        graph = build_graph(runtime, task, request, ctx.files, {u.field: u.name for u in uploads}, loras, video_format)
        return JobPlan(
            prompt=graph.prompt,
            uploads=uploads,
            progress=progress_plan(task, request, graph),
            outputs=TaskOutputs(
                tuple(graph.roles[role] for role in graph.outputs),
                graph.roles.get("save_last_frame"),
                self.prepared.get("audio"),
                f"{ctx.files.stem}.{video_format.extension}",
            ),
            fields={
                "task": request.task, "seed": request.seed, "width": request.width, "height": request.height,
                "length": request.length, "frame_rate": request.video_frame_rate,
                **{name: getattr(request, name) for name in ("mode", "control", "mask") if getattr(request, name)},
            },  # fmt: skip
            extras=_extras(request, loras),
            warnings=(format_warning,) if format_warning else (),
            log_warnings=lambda text: lora_warnings(text, loras),
            log_extras=lambda text: {"cache": step_cache.report(request.cache, text)} if request.cache else {},
        )


def build_graph(
    runtime: Runtime,
    task: Task,
    request: VideoRequest,
    files: JobFiles,
    uploaded: Mapping[str, str],
    loras: Sequence[AppliedLora] = (),
    video_format: VideoFormat = encoding.FORMATS[encoding.DEFAULT_FORMAT],
) -> Graph:
    """The task's graph filled for this job (``uploaded``: the uploaded file name by input field), with
    its LoRAs, its models compiled (``TORCH_COMPILE``) and cached (``cache``), interpolation, and the
    last frame (of the video as encoded) saved when asked."""
    settings = runtime.settings
    graph = Graph(runtime.templates[task.name])
    models = task.model_names(settings.model_names, request)
    inputs = FillInputs(request, models, uploaded, files.filename_prefix, settings.save_metadata, video_format, runtime.fragments)
    task.fill(graph, inputs)
    for spec_role, after in task.speed_loras(request.speed).items():
        graph.insert_after(after, runtime.fragments["lora.json"], f"speed_{spec_role}", "model", lora_name=models[spec_role], strength_model=1.0)
    add_loras(graph, task, runtime.fragments["lora.json"], loras)
    if settings.torch_compile:
        add_compile(graph, runtime.fragments, task.final_models)
    if request.cache:
        add_cache(graph, runtime.fragments, task.final_models)
    if request.interpolate > 1:
        add_interpolation(graph, runtime.fragments, request.interpolate, models["interpolation_model"])
    if request.return_last_frame:
        add_last_frame(graph, runtime.fragments, files.last_frame_prefix)
    if "audio" in uploaded and len(graph.outputs) == 1:  # in segments, the worker joins them and adds the track
        add_audio(graph, runtime.fragments, uploaded["audio"])
    return graph


def progress_plan(task: Task, request: VideoRequest, graph: Graph) -> ProgressPlan:
    """The stages of a task's graph: its samplers by role, the decoders, the video nodes, what loads
    before, what preprocesses the job's video; for a video made in segments, which segment each node works on."""
    samplers = task.sampler_stages(request)
    suffixes = [role.removeprefix("video_output") for role in graph.outputs]  # segment k's roles end in "_k"
    segments: dict[str, tuple[int, int]] = {}
    upstream = graph.upstream(samplers)
    preprocess = tuple(node for node in sorted(upstream) if graph.prompt[node]["class_type"] in PREPROCESS_CLASSES)
    if len(suffixes) > 1:  # one sampler per segment, in order
        for k, (suffix, sampler) in enumerate(zip(suffixes, samplers, strict=True), start=1):
            segments |= dict.fromkeys((graph.roles[sampler], graph.roles["decode" + suffix], graph.roles["video_output" + suffix]), (k, len(suffixes)))
    return ProgressPlan(
        samplers={graph.roles[role]: stage for role, stage in samplers.items()},
        decode=tuple(graph.roles["decode" + suffix] for suffix in suffixes),
        encode=tuple(graph.roles[role] for role in graph.outputs),
        loading=loading_weights(graph.prompt, upstream - set(preprocess)),
        preprocess=preprocess,
        interpolate=graph.roles.get("interpolate"),
        steps=request.steps * len(suffixes) if segments else request.steps,
        frames=request.video_frames,
        segments=segments,
    )


@dataclass(frozen=True)
class TaskOutputs:
    """The video of the task's video node — or of its segments' nodes, joined with the job's track —
    and, when saved, the last frame's PNG."""

    video_nodes: tuple[str, ...]
    last_frame_node: str | None
    #: The job's sound track: the answer says what the video carries of it (the worker adds it to segments).
    track: PreparedInput | None = None
    #: The joined video's file name.
    joined_name: str = "video.mp4"

    def collect(self, client: FileSource, run: RunResult, produced: list[OutputFile]) -> Collected:
        segments = [find_videos(run.outputs, node) for node in self.video_nodes]
        produced.extend(video for videos in segments for video in videos)
        video = segments[0][0]
        data = read_video(client, video)
        name = video.filename
        if len(segments) > 1:
            parts = [data, *(read_video(client, videos[0]) for videos in segments[1:])]
            data, name = join_segments(parts, video.format, self.track.data if self.track else None), self.joined_name
        artifacts = [Artifact("video", name, data, video.format.content_type)]
        if self.last_frame_node is not None:
            frame = find_image(run.outputs, self.last_frame_node)
            produced.append(frame)
            artifacts.append(Artifact("last_frame", frame.filename, read_png(client, frame), "image/png"))
        facts = {"audio": audio_track(data)} if self.track is not None else {}
        return Collected(tuple(artifacts), name, len(segments[0]), video.format.content_type, facts)


def _extras(request: VideoRequest, loras: Sequence[AppliedLora]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if request.speed != DEFAULT_SPEED:
        extras["speed"] = request.speed
    if request.interpolate > 1:
        extras.update(interpolate=request.interpolate, interpolation_model=request.interpolation_model, frames=request.video_frames)
    if loras:
        extras["loras"] = [lora.describe() for lora in loras]
    return extras
