"""One job, start to end: input → request → task → images → graph → ComfyUI run → outputs → response.

Everything here blocks and runs in a worker thread (see ``handler.py``); ``stop`` is the flag the
async handler sets when RunPod cancels the job. Each stage lives in its own module; this one only
orders them, times them, and makes sure a failed job leaves ComfyUI usable and the disk clean.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfy_bootstrap.client import ComfyClient
from comfy_bootstrap.errors import ComfyBootError, ComfyUnavailable, ExecutionTimeout, OutputMissing
from comfy_bootstrap.execution import RunOptions, RunResult, run_prompt
from comfy_bootstrap.models import check_models
from comfy_bootstrap.server import ComfyServer
from worker import encoding
from worker.delivery import Artifact, Delivery, choose_delivery, unavailable_modes
from worker.encoding import VideoFormat
from worker.errors import InvalidInput
from worker.graph import (
    Graph,
    JobFiles,
    Template,
    add_compile,
    add_interpolation,
    add_last_frame,
    job_files,
    load_fragments,
    load_template,
)
from worker.image import PreparedImage, prepare_image
from worker.lora_files import LoraCache
from worker.loras import AppliedLora, register_lora_cache
from worker.loras import add_to_graph as add_loras
from worker.loras import resolve as resolve_loras
from worker.loras import warnings_from_log as lora_warnings
from worker.model_files import check_model_files
from worker.outputs import OutputFile, find_image, find_videos, read_png, read_video, remove_job_files
from worker.progress import ProgressReporter
from worker.request import CustomRequest, VideoRequest, fit_to_image, parse_request
from worker.settings import Settings
from worker.storage import S3Storage, missing_settings, safe_endpoint
from worker.tasks import REGISTRY, custom
from worker.tasks.base import DEFAULT_SPEED, FillInputs, Task

log = logging.getLogger(__name__)

ProgressSender = Callable[[dict[str, object]], None]


@dataclass
class Runtime:
    """What lives for the whole worker: settings, ComfyUI, its client, the served tasks' graphs,
    and the S3 uploader when S3 output is configured."""

    settings: Settings
    server: ComfyServer
    client: ComfyClient
    templates: dict[str, Template]
    #: Pieces added to a task's graph on request (``workflows/fragments/``).
    fragments: dict[str, Template]
    #: LoRAs fetched by URL, cached in a folder ComfyUI searches.
    loras: LoraCache
    storage: S3Storage | None = None
    _classes: tuple[int | None, set[str]] | None = field(default=None, repr=False)

    def node_classes(self) -> set[str]:
        """The node classes the running ComfyUI registered, asked once per ComfyUI process."""
        pid = self.server.pid
        if self._classes is None or self._classes[0] != pid:
            self._classes = (pid, self.client.node_classes())
        return self._classes[1]

    @classmethod
    def create(cls, settings: Settings, *, server: ComfyServer | None = None, loras: LoraCache | None = None) -> Runtime:
        """Load every served task's graph (a broken one fails here, at boot). ``server`` is the
        ComfyUI to use (default: a new one, not started), ``loras`` the LoRA cache (default: a new
        one); the cache folder is registered as a ComfyUI ``loras`` folder."""
        templates = {
            name: load_template(settings.workflows_dir / REGISTRY[name].workflow, REGISTRY[name].roles) for name in settings.tasks
        }
        fragments = load_fragments(settings.workflows_dir / "fragments")
        loras = loras or LoraCache.from_settings(settings)
        settings = register_lora_cache(settings, loras)
        client = ComfyClient(settings.comfy.base_url, timeout=settings.comfy.http_timeout)
        server = server or ComfyServer(settings.comfy)
        return cls(settings, server, client, templates, fragments, loras, _create_storage(settings))


def _create_storage(settings: Settings) -> S3Storage | None:
    """The uploader (its client is made on first use); a half-done S3 setup is logged at boot."""
    s3 = settings.s3
    if s3.configured:
        log.info(
            "S3 output: bucket %s at %s, keys %s/<job id>/<file>, links valid %d s, default output mode %s",
            s3.bucket, safe_endpoint(s3), s3.prefix, s3.url_expiry, settings.output_mode,
        )  # fmt: skip
        return S3Storage(s3)
    if s3.endpoint_url or s3.bucket or s3.access_key_id or s3.secret_access_key:
        log.warning("S3 output is off, files go out as base64: missing %s", ", ".join(missing_settings(s3)))
    return None


@dataclass
class Timer:
    """Named stage durations in seconds, for the response's ``timings``."""

    start: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)
    _last: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._last = self.start

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.marks[name] = round(now - self._last, 3)
        self._last = now

    def result(self, run: RunResult) -> dict[str, float]:
        """The laps, ComfyUI's own queue wait and execution time, and the total so far."""
        return {
            **self.marks,
            "queue_wait": round(max((run.started_at or run.queued_at) - run.queued_at, 0.0), 3),
            "execution": round(run.execution_seconds, 3),
            "total": round(time.monotonic() - self.start, 3),
        }


def generate_video(
    job_input: Any,
    job_id: str,
    runtime: Runtime,
    *,
    stop: threading.Event | None = None,
    send_progress: ProgressSender | None = None,
) -> dict[str, Any]:
    """Run one job and return RunPod's output dict; raise WorkerError/ComfyError on failure."""
    settings = runtime.settings
    timer = Timer()
    request = parse_request(job_input, settings, unavailable_modes=unavailable_modes(settings, runtime.storage))
    delivery = choose_delivery(request.output_mode, settings, runtime.storage)
    if isinstance(request, CustomRequest):
        return _custom_job(request, job_id, runtime, delivery, timer, stop, send_progress)
    task = REGISTRY[request.task]
    video_format, format_warning = encoding.choose(request.video_format)
    images = {image.field: prepare_image(image, settings.limits) for image in request.images}
    if images:
        first = next(iter(images.values()))
        request = fit_to_image(request, first.width, first.height, settings.limits)
    log.info(
        "job %s: task %s, %dx%d, %d frames, %d steps, seed %d, images %s, output %s",
        job_id, task.name, request.width, request.height, request.length, request.steps, request.seed,
        {name: image.description for name, image in images.items()} or "none", delivery.mode,
    )  # fmt: skip
    timer.lap("prepare")
    runtime.server.ensure_alive()
    model_files = task.model_files(settings.model_names, request.speed)
    subject = f"task {task.name}: " if request.speed == DEFAULT_SPEED else f"task {task.name}, speed {request.speed}: "
    check_models(settings.comfy, model_files, runtime.client.list_models, subject=subject)
    check_model_files(settings.comfy, task.name, model_files)
    files = job_files(job_id)
    uploaded: list[str] = []
    produced: list[OutputFile] = []
    with runtime.loras.job() as fetched:  # files fetched by URL stay pinned in the cache until the end
        try:
            loras = resolve_loras(request.loras, lambda: runtime.client.list_models("loras"), fetched, settings.comfy)
            if loras:
                timer.lap("loras")
            _upload(runtime, files, images, uploaded)
            graph = build_graph(runtime, task, request, files, loras, video_format)
            timer.lap("upload")
            logged_from = runtime.server.log_position()
            run = _run(runtime, graph.prompt, _options(runtime, _task_progress(task, request, graph), timer.start, stop, send_progress))
            timer.lap("comfyui")
            warnings = [*([format_warning] if format_warning else []), *lora_warnings(runtime.server.log_since(logged_from), loras)]
            videos, artifacts = _collect(runtime.client, request, graph, run, produced)
            delivered = _deliver(delivery, job_id, artifacts, timer)
            return {**_response(request, run, videos, delivered, timer.result(run), loras, warnings), **_launch(runtime)}
        finally:
            if not settings.keep_files:
                remove_job_files(settings.comfy.input_dir, settings.comfy.output_dir, uploaded, produced)


def _custom_job(
    request: CustomRequest,
    job_id: str,
    runtime: Runtime,
    delivery: Delivery,
    timer: Timer,
    stop: threading.Event | None,
    send_progress: ProgressSender | None,
) -> dict[str, Any]:
    """A job with its own graph: its classes checked, the job's values put in, run, its first video
    (or its images) returned; the same limits, cleanup and errors as a task's job."""
    settings = runtime.settings
    images = {"image": prepare_image(request.image, settings.limits)} if request.image else {}
    log.info("job %s: your own workflow of %d nodes, seed %d, output %s", job_id, len(request.workflow), request.seed, delivery.mode)
    timer.lap("prepare")
    runtime.server.ensure_alive()
    unknown = custom.unknown_classes(request.workflow, runtime.node_classes())
    if unknown:
        raise InvalidInput(
            f"workflow: node classes this ComfyUI does not have: {', '.join(unknown)} (allowed: the classes of "
            "ComfyUI v0.30.0 and of the node packs in this image: VideoHelperSuite, ComfyUI_essentials, Frame-Interpolation)"
        )
    files = job_files(job_id)
    uploaded: list[str] = []
    produced: list[OutputFile] = []
    try:
        _upload(runtime, files, images, uploaded)
        prompt, warnings = custom.fill(request, uploaded[0] if uploaded else None, files.stem)
        timer.lap("upload")
        run = _run(runtime, prompt, _options(runtime, custom.progress(prompt), timer.start, stop, send_progress))
        timer.lap("comfyui")
        videos, pictures = custom.find_outputs(run.outputs)
        produced.extend(videos + pictures)
        if videos:
            artifacts = [Artifact("video", videos[0].filename, read_video(runtime.client, videos[0]), videos[0].format.content_type)]
        elif pictures:
            artifacts = [Artifact("images", p.filename, read_png(runtime.client, p), "image/png", listed=True) for p in pictures]
        else:
            raise OutputMissing(f"your workflow finished but reported no video and no PNG image (outputs: {sorted(run.outputs)})")
        delivered = _deliver(delivery, job_id, artifacts, timer)
        answer = {
            **delivered,
            "filename": artifacts[0].filename,
            "prompt_id": run.prompt_id,
            "files_count": len(videos) or len(pictures),
            "task": custom.NAME,
            "seed": request.seed,
            "timings": timer.result(run),
        }
        if videos:
            answer["content_type"] = videos[0].format.content_type
        return {**answer, **({"warnings": warnings} if warnings else {}), **_launch(runtime)}
    finally:
        if not settings.keep_files:
            remove_job_files(settings.comfy.input_dir, settings.comfy.output_dir, uploaded, produced)


def build_graph(
    runtime: Runtime,
    task: Task,
    request: VideoRequest,
    files: JobFiles,
    loras: Sequence[AppliedLora] = (),
    video_format: VideoFormat = encoding.FORMATS[encoding.DEFAULT_FORMAT],
) -> Graph:
    """The task's graph filled for this job, with its LoRAs, its models compiled (``TORCH_COMPILE``),
    interpolation, and the last frame (of the video as encoded) saved when asked."""
    settings = runtime.settings
    graph = Graph(runtime.templates[task.name])
    uploaded = {image.field: files.image_name(image.field) for image in request.images}
    models = task.model_names(settings.model_names, request.speed)
    task.fill(graph, FillInputs(request, models, uploaded, files.filename_prefix, settings.save_metadata, video_format))
    add_loras(graph, task, runtime.fragments["lora.json"], loras)
    if settings.torch_compile:
        add_compile(graph, runtime.fragments, task.final_models)
    if request.interpolate > 1:
        add_interpolation(graph, runtime.fragments, request.interpolate)
    if request.return_last_frame:
        add_last_frame(graph, runtime.fragments, files.last_frame_prefix)
    return graph


def _task_progress(task: Task, request: VideoRequest, graph: Graph) -> dict[str, Any]:
    """What the progress reporter needs to know of a task's graph."""
    samplers = task.sampler_stages(request)
    return {
        "samplers": {graph.roles[role]: stage for role, stage in samplers.items()},
        "decode": graph.roles["decode"],
        "encode": graph.roles["video_output"],
        "loading": graph.upstream(samplers),
        "interpolate": graph.roles.get("interpolate"),
        "steps": request.steps,
        "frames": request.video_frames,
    }


def _options(
    runtime: Runtime, progress: dict[str, Any], started: float, stop: threading.Event | None, send_progress: ProgressSender | None
) -> RunOptions:
    settings = runtime.settings
    reporter = ProgressReporter(
        **progress, started=started, send=send_progress or (lambda _update: None), interval=settings.progress_interval
    )
    return RunOptions(
        timeout=settings.job_timeout,
        stop=stop or threading.Event(),
        on_message=reporter.on_message,
        reconnect_attempts=settings.ws_reconnect_attempts,
    )


def _upload(runtime: Runtime, files: JobFiles, images: Mapping[str, PreparedImage], uploaded: list[str]) -> None:
    """Upload the job's images under job-unique names; ``uploaded`` collects them for the cleanup."""
    for name, image in images.items():
        uploaded.append(files.image_name(name))
        runtime.client.upload_image(uploaded[-1], image.png)


def _run(runtime: Runtime, prompt: dict[str, Any], options: RunOptions) -> RunResult:
    """Run the prompt; after a crash or a hang, leave ComfyUI restarted for the next job."""
    try:
        return run_prompt(runtime.client, prompt, options)
    except ExecutionTimeout as exc:
        if exc.unresponsive:
            try:
                runtime.server.restart("ComfyUI did not stop the timed-out prompt")
            except ComfyBootError as boot:  # the job's answer stays "timeout"; the next job tries again
                log.error("ComfyUI could not be restarted after the timeout: %s", boot)
        raise
    except ComfyUnavailable as exc:
        crash = runtime.server.crash_report()
        if crash is not None:
            raise ComfyUnavailable(f"{exc}; {crash.text}", refresh_worker=exc.refresh_worker, host_oom=crash.host_oom) from exc
        raise


def _collect(
    client: ComfyClient, request: VideoRequest, graph: Graph, run: RunResult, produced: list[OutputFile]
) -> tuple[list[OutputFile], list[Artifact]]:
    """The videos the run reported and the response's files (the first video, the last frame when
    asked); ``produced`` collects every reported file for the cleanup."""
    videos = find_videos(run.outputs, graph.roles["video_output"])
    produced.extend(videos)
    video = videos[0]
    artifacts = [Artifact("video", video.filename, read_video(client, video), video.format.content_type)]
    if request.return_last_frame:
        frame = find_image(run.outputs, graph.roles["save_last_frame"])
        produced.append(frame)
        artifacts.append(Artifact("last_frame", frame.filename, read_png(client, frame), "image/png"))
    return videos, artifacts


def _deliver(delivery: Delivery, job_id: str, artifacts: list[Artifact], timer: Timer) -> dict[str, Any]:
    """Hand the files to the delivery; an upload gets a lap of its own after the reading."""
    if delivery.upload_lap:
        timer.lap("output")
    fields = delivery.deliver(job_id, artifacts)
    timer.lap(delivery.upload_lap or "output")
    return fields


def _launch(runtime: Runtime) -> dict[str, Any]:
    """The answer's ``launch``: how ComfyUI runs the job (none when the worker attached to a ComfyUI)."""
    plan = runtime.server.plan
    if plan is None:
        return {}
    return {"launch": {**plan.report(), "torch_compile": runtime.settings.torch_compile}}


def _response(
    request: VideoRequest,
    run: RunResult,
    videos: list[OutputFile],
    delivered: dict[str, Any],
    timings: dict[str, float],
    loras: Sequence[AppliedLora],
    warnings: list[str],
) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if request.speed != DEFAULT_SPEED:
        extras["speed"] = request.speed
    if request.interpolate > 1:
        extras.update(interpolate=request.interpolate, frames=request.video_frames)
    if loras:
        extras["loras"] = [lora.describe() for lora in loras]
    if warnings:
        extras["warnings"] = warnings
    return {
        **delivered,
        "filename": videos[0].filename,
        "prompt_id": run.prompt_id,
        "files_count": len(videos),
        "task": request.task,
        "seed": request.seed,
        "width": request.width,
        "height": request.height,
        "length": request.length,
        "frame_rate": request.video_frame_rate,
        "content_type": videos[0].format.content_type,
        "timings": timings,
        **extras,
    }
