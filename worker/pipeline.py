"""One job, start to end: input → request → image → workflow → ComfyUI run → video → response.

Everything here blocks and runs in a worker thread (see ``handler.py``); ``stop`` is the flag the
async handler sets when RunPod cancels the job. Each stage lives in its own module; this one only
orders them, times them, and makes sure a failed job leaves ComfyUI usable and the disk clean.

The video leaves either as base64 in the response or through S3 (:mod:`worker.storage`) with a
presigned link: the job's ``output_mode`` or ``OUTPUT_MODE`` decides, and ``auto`` means S3
whenever the worker has it configured (so a video too large for the response still arrives).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfy_bootstrap.client import ComfyClient
from comfy_bootstrap.config import Settings
from comfy_bootstrap.errors import ComfyUnavailable, ExecutionTimeout
from comfy_bootstrap.execution import RunOptions, RunResult, run_prompt
from comfy_bootstrap.models import check_models
from comfy_bootstrap.process import ComfyServer
from worker.image import prepare_image
from worker.progress import ProgressReporter
from worker.request import VideoRequest, parse_request
from worker.storage import S3Storage, missing_settings, safe_endpoint
from worker.video import VideoFile, encode_video, find_videos, read_video, remove_job_files
from worker.workflow import WorkflowTemplate, fill_workflow, job_files, load_template

log = logging.getLogger(__name__)

#: Room for the response's fields other than the video (names, timings, JSON punctuation).
RESPONSE_OVERHEAD = 4096

ProgressSender = Callable[[dict[str, object]], None]


@dataclass
class Runtime:
    """What lives for the whole worker: settings, the ComfyUI child, its client, the workflow,
    and the S3 uploader when S3 output is configured."""

    settings: Settings
    server: ComfyServer
    client: ComfyClient
    template: WorkflowTemplate
    storage: S3Storage | None = None

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        """Load the workflow (a broken one fails here, at boot) and prepare, not start, ComfyUI."""
        template = load_template(settings.workflow_path)
        client = ComfyClient(settings.base_url, timeout=settings.http_timeout)
        return cls(settings, ComfyServer(settings), client, template, _create_storage(settings))

    @property
    def s3_unavailable(self) -> str | None:
        """Why this worker cannot upload to S3, or None when it can."""
        if self.storage is not None:
            return None
        return f"S3 output is not configured (the operator sets {', '.join(missing_settings(self.settings.s3))})"


def _create_storage(settings: Settings) -> S3Storage | None:
    """The uploader (its client is made on first use); a half-done S3 setup is logged at boot."""
    s3 = settings.s3
    if s3.configured:
        log.info(
            "S3 output: bucket %s at %s, keys %s/<job id>/<file>.mp4, links valid %d s, default output mode %s",
            s3.bucket, safe_endpoint(s3), s3.prefix, s3.url_expiry, settings.output_mode,
        )  # fmt: skip
        return S3Storage(s3)
    if s3.endpoint_url or s3.bucket or s3.access_key_id or s3.secret_access_key:
        log.warning("S3 output is off, videos go out as base64: missing %s", ", ".join(missing_settings(s3)))
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
    request = parse_request(job_input, settings.limits, s3_unavailable=runtime.s3_unavailable)
    mode = _output_mode(request, runtime)
    image = prepare_image(request, settings.limits)
    log.info(
        "job %s: %dx%d, %d frames, %d steps (split %d), seed %d, image %s, output %s",
        job_id, request.width, request.height, request.length, request.steps, request.split_step, request.seed,
        image.description, mode,
    )
    timer.lap("prepare")
    runtime.server.ensure_alive()
    check_models(settings, runtime.client.list_models)
    files = job_files(job_id)
    videos: list[VideoFile] = []
    try:
        runtime.client.upload_image(files.image_name, image.png)
        filled = fill_workflow(runtime.template, request, files, settings.models, save_metadata=settings.save_metadata)
        timer.lap("upload")
        reporter = ProgressReporter(
            filled.roles,
            steps=request.steps,
            split_step=request.split_step,
            frames=request.length,
            send=send_progress or (lambda _update: None),
            interval=settings.progress_interval,
        )
        options = RunOptions(
            timeout=settings.job_timeout,
            stop=stop or threading.Event(),
            on_message=reporter.on_message,
            reconnect_attempts=settings.ws_reconnect_attempts,
        )
        run = _run(runtime, filled.prompt, options)
        timer.lap("comfyui")
        videos = find_videos(run.outputs, filled.roles["video_output"])
        data = read_video(runtime.client, videos[0])
        delivered = _deliver(runtime, mode, job_id, videos[0], data, timer)
        return _response(request, run, videos, delivered, timer.result(run))
    finally:
        if not settings.keep_files:
            remove_job_files(settings.input_dir, settings.output_dir, files.image_name, videos)


def _output_mode(request: VideoRequest, runtime: Runtime) -> str:
    """``s3`` or ``base64`` for this job: ``auto`` means S3 whenever the worker has it.

    ``s3`` without S3 cannot get here: a job's own ``s3`` is refused by validation, and
    ``OUTPUT_MODE=s3`` without S3 settings stops the worker at boot (config.py).
    """
    mode = request.output_mode or runtime.settings.output_mode
    if mode == "auto":
        return "s3" if runtime.storage is not None else "base64"
    return mode


def _deliver(
    runtime: Runtime, mode: str, job_id: str, video: VideoFile, data: bytes, timer: Timer
) -> dict[str, Any]:
    """The response's video fields: ``video`` (base64), or the S3 link after uploading."""
    storage = runtime.storage
    if mode == "s3" and storage is not None:  # always true for s3, see _output_mode
        timer.lap("output")
        stored = storage.upload(data, storage.key_for(job_id, video.filename))
        timer.lap("s3_upload")
        return stored.response_fields()
    encoded = encode_video(
        data,
        response_overhead=RESPONSE_OVERHEAD,
        limit=runtime.settings.max_response_bytes,
        s3_configured=storage is not None,
    )
    timer.lap("output")
    return {"video": encoded}


def _run(runtime: Runtime, prompt: dict[str, Any], options: RunOptions) -> RunResult:
    """Run the prompt; after a crash or a hang, leave ComfyUI restarted for the next job."""
    try:
        return run_prompt(runtime.client, prompt, options)
    except ExecutionTimeout as exc:
        if exc.unresponsive:
            runtime.server.restart("ComfyUI did not stop the timed-out prompt")
        raise
    except ComfyUnavailable as exc:
        detail = runtime.server.crash_report()
        if detail:
            raise ComfyUnavailable(f"{exc}; {detail}", refresh_worker=exc.refresh_worker) from exc
        raise


def _response(
    request: VideoRequest, run: RunResult, videos: list[VideoFile], delivered: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    return {
        **delivered,
        "filename": videos[0].filename,
        "prompt_id": run.prompt_id,
        "files_count": len(videos),
        "seed": request.seed,
        "width": request.width,
        "height": request.height,
        "length": request.length,
        "frame_rate": request.frame_rate,
        "timings": timings,
    }
