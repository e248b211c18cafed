"""One job, start to end: input → request → task → images → graph → ComfyUI run → outputs → response.

Everything here blocks and runs in a worker thread (see ``handler.py``); ``stop`` is the flag the
async handler sets when RunPod cancels the job. Each stage lives in its own module; this one only
orders them, times them, and makes sure a failed job leaves ComfyUI usable and the disk clean.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfy_bootstrap.client import ComfyClient
from comfy_bootstrap.errors import ComfyBootError, ComfyUnavailable, ExecutionTimeout
from comfy_bootstrap.execution import RunOptions, RunResult, run_prompt
from comfy_bootstrap.models import check_models
from comfy_bootstrap.server import ComfyServer
from worker.delivery import Artifact, Delivery, choose_delivery, unavailable_modes
from worker.graph import Graph, JobFiles, Template, add_last_frame, job_files, load_fragments, load_template
from worker.image import prepare_image
from worker.model_files import check_model_files
from worker.outputs import OutputFile, find_image, find_videos, read_png, read_video, remove_job_files
from worker.progress import ProgressReporter
from worker.request import VideoRequest, fit_to_image, parse_request
from worker.settings import Settings
from worker.storage import S3Storage, missing_settings, safe_endpoint
from worker.tasks import REGISTRY
from worker.tasks.base import FillInputs, Task

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
    storage: S3Storage | None = None

    @classmethod
    def create(cls, settings: Settings, *, server: ComfyServer | None = None) -> Runtime:
        """Load every served task's graph (a broken one fails here, at boot); ``server`` is the
        ComfyUI to use (default: a new one, not started)."""
        templates = {
            name: load_template(settings.workflows_dir / REGISTRY[name].workflow, REGISTRY[name].roles) for name in settings.tasks
        }
        fragments = load_fragments(settings.workflows_dir / "fragments")
        client = ComfyClient(settings.comfy.base_url, timeout=settings.comfy.http_timeout)
        server = server or ComfyServer(settings.comfy)
        return cls(settings, server, client, templates, fragments, _create_storage(settings))


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
    task = REGISTRY[request.task]
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
    check_models(settings.comfy, task.model_files(settings.model_names), runtime.client.list_models, subject=f"task {task.name}: ")
    check_model_files(settings.comfy, task.name, task.model_files(settings.model_names))
    files = job_files(job_id)
    uploaded: list[str] = []
    produced: list[OutputFile] = []
    try:
        for name, image in images.items():
            uploaded.append(files.image_name(name))
            runtime.client.upload_image(uploaded[-1], image.png)
        graph = build_graph(runtime, task, request, files)
        timer.lap("upload")
        run = _run(runtime, graph, _options(runtime, task, request, graph, timer.start, stop, send_progress))
        timer.lap("comfyui")
        videos, artifacts = _collect(runtime.client, request, graph, run, produced)
        delivered = _deliver(delivery, job_id, artifacts, timer)
        return _response(request, run, videos, delivered, timer.result(run))
    finally:
        if not settings.keep_files:
            remove_job_files(settings.comfy.input_dir, settings.comfy.output_dir, uploaded, produced)


def build_graph(runtime: Runtime, task: Task, request: VideoRequest, files: JobFiles) -> Graph:
    """The task's graph filled for this job, with the last frame saved when asked."""
    settings = runtime.settings
    graph = Graph(runtime.templates[task.name])
    uploaded = {image.field: files.image_name(image.field) for image in request.images}
    models = task.model_names(settings.model_names)
    task.fill(graph, FillInputs(request, models, uploaded, files.filename_prefix, settings.save_metadata))
    if request.return_last_frame:
        add_last_frame(graph, runtime.fragments, files.last_frame_prefix)
    return graph


def _options(
    runtime: Runtime,
    task: Task,
    request: VideoRequest,
    graph: Graph,
    started: float,
    stop: threading.Event | None,
    send_progress: ProgressSender | None,
) -> RunOptions:
    settings = runtime.settings
    samplers = task.sampler_stages(request)
    reporter = ProgressReporter(
        {graph.roles[role]: stage for role, stage in samplers.items()},
        decode=graph.roles["decode"],
        encode=graph.roles["video_output"],
        loading=graph.upstream(samplers),
        started=started,
        steps=request.steps,
        frames=request.length,
        send=send_progress or (lambda _update: None),
        interval=settings.progress_interval,
    )
    return RunOptions(
        timeout=settings.job_timeout,
        stop=stop or threading.Event(),
        on_message=reporter.on_message,
        reconnect_attempts=settings.ws_reconnect_attempts,
    )


def _run(runtime: Runtime, graph: Graph, options: RunOptions) -> RunResult:
    """Run the prompt; after a crash or a hang, leave ComfyUI restarted for the next job."""
    try:
        return run_prompt(runtime.client, graph.prompt, options)
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
    artifacts = [Artifact("video", videos[0].filename, read_video(client, videos[0]), "video/mp4")]
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


def _response(
    request: VideoRequest, run: RunResult, videos: list[OutputFile], delivered: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
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
        "frame_rate": request.frame_rate,
        "timings": timings,
    }
