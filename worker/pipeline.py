"""One job, start to end: input → request → media → job plan → ComfyUI run → artifacts → delivery → response.

Everything here blocks and runs in a worker thread (see ``handler.py``); ``stop`` is the flag the
async handler sets when RunPod cancels the job. Each stage lives in its own module, and every kind
of job (a stored task, a graph of the job's own) comes here as one :class:`~worker.plan.JobPlan`;
this module only orders the stages, times them, and makes sure a failed job leaves ComfyUI usable
and the disk clean.
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfy_bootstrap.client import ComfyClient
from comfy_bootstrap.errors import ComfyBootError, ComfyUnavailable, ExecutionTimeout
from comfy_bootstrap.execution import RunOptions, RunResult, run_prompt
from comfy_bootstrap.models import ModelFile, check_models, find_model
from comfy_bootstrap.server import ComfyServer, comfy_server
from worker.delivery import Artifact, Delivery, Provider
from worker.errors import StorageFull
from worker.graph import Template, job_files, load_fragments, load_template
from worker.inputs import prepare_inputs, with_video_sound
from worker.inputs.base import PreparedInput
from worker.job_time import JobTime
from worker.lora_files import LoraCache
from worker.loras import register_lora_cache
from worker.outputs import VHS_METADATA, FileSource, LocalFiles, OutputFile, remove_job_files
from worker.plan import Collected, Job, JobPlan, PlanContext, Upload
from worker.progress import Marks, ProgressReporter
from worker.request.model import CustomRequest, VideoRequest
from worker.request.options import adapt_to_media
from worker.request.parse import parse_request
from worker.settings import Settings
from worker.tasks import REGISTRY
from worker.tasks.custom import CustomJob
from worker.tasks.stored import StoredJob

log = logging.getLogger(__name__)

ProgressSender = Callable[[dict[str, object]], None]


@dataclass
class Runtime:
    """What lives for the whole worker: settings, ComfyUI, its client, the served tasks' graphs, the
    LoRA cache and the output providers."""

    settings: Settings
    server: ComfyServer
    client: ComfyClient
    templates: dict[str, Template]
    #: Pieces added to a task's graph on request (``workflows/fragments/``).
    fragments: dict[str, Template]
    #: LoRAs fetched by URL, cached in a folder ComfyUI searches.
    loras: LoraCache
    delivery: Delivery
    _classes: tuple[int | None, dict[str, bool]] | None = field(default=None, repr=False)
    #: The model files the running ComfyUI (by pid) listed: (folder, name).
    _listed: tuple[int | None, frozenset[tuple[str, str]]] = field(default=(None, frozenset()), repr=False)

    @functools.cached_property
    def files(self) -> FileSource:
        """Where a run's files are read: the launched ComfyUI's folders (the worker's own), else ``GET /view``."""
        comfy = self.settings.comfy
        if comfy.attached:
            return self.client
        return LocalFiles({"output": comfy.output_dir, "temp": comfy.temp_files_dir, "input": comfy.input_dir})

    def check_models(self, files: Sequence[ModelFile], *, subject: str) -> None:
        """Raise ModelsMissing unless ComfyUI lists each of ``files``. Files this ComfyUI process listed
        before, and still on the disk where it loads them from, are not asked again (four requests
        a job otherwise); a file gone since is asked about, and named missing."""
        pid, comfy = self.server.pid, self.settings.comfy
        listed = self._listed[1] if pid is not None and self._listed[0] == pid else frozenset()
        if all((f.folder, f.name) in listed and find_model(comfy, f) is not None for f in files):
            return
        check_models(comfy, files, self.client.list_models, subject=subject)
        self._listed = (pid, listed | {(f.folder, f.name) for f in files})

    def node_classes(self) -> dict[str, bool]:
        """The node classes the running ComfyUI registered (each: is it an output node), asked once per ComfyUI process."""
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
        server = server or comfy_server(settings.comfy)
        delivery = Delivery(settings.delivery, settings.output_mode)
        return cls(settings, server, client, templates, fragments, loras, delivery)


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

    def result(self, run: RunResult, seen: Marks) -> dict[str, float]:
        """The laps, ComfyUI's own queue wait and execution time (its loading part: from the start
        of the run until the first sampler starts), the job's time to the first sampling step when
        one ran, and the total so far."""
        started = run.started_at if run.started_at is not None else run.queued_at
        loaded = seen.loaded_at if seen.loaded_at is not None else run.finished_at
        first_step = {"first_step": round(seen.first_step_at - self.start, 3)} if seen.first_step_at is not None else {}
        return {
            **self.marks,
            "queue_wait": round(max(started - run.queued_at, 0.0), 3),
            "execution": round(run.execution_seconds, 3),
            "loading": round(min(max(loaded - started, 0.0), run.execution_seconds), 3),
            **first_step,
            "total": round(time.monotonic() - self.start, 3),
        }


def generate_video(
    job_input: Any,
    job_id: str,
    runtime: Runtime,
    *,
    stop: threading.Event | None = None,
    send_progress: ProgressSender | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Run one job — a stored task's or one with its own graph, the same way — and return RunPod's
    output dict; raise WorkerError/ComfyError on failure. ``started`` (``time.monotonic()``, the
    handler's first line) is where ``JOB_TIMEOUT`` counts from; every stage ends with it or ``stop``."""
    settings = runtime.settings
    timer = Timer() if started is None else Timer(start=started)
    clock = JobTime(timer.start + settings.job_timeout, stop or threading.Event(), settings.job_timeout)
    request = parse_request(job_input, settings, unavailable_modes=runtime.delivery.unavailable)
    delivery = runtime.delivery.choose(request.output_mode)
    prepared = prepare_inputs(request.inputs, settings.limits, clock)
    job = _job(request, prepared, settings)
    log.info("job %s: %s, output %s", job_id, job.describe(), delivery.mode)
    timer.lap("prepare")
    runtime.server.ensure_alive()  # a job that comes while ComfyUI boots (or restarts) waits here
    timer.lap("boot_wait")
    job.check(runtime)
    files = job_files(job_id)
    uploaded: list[str] = []
    produced: list[OutputFile] = []
    with runtime.loras.job(job_deadline=clock.deadline, stop=clock.stop) as fetched:  # pinned until the end
        try:
            plan = job.plan(PlanContext(runtime, files, fetched, timer))
            clock.check("uploading the media")
            _upload(runtime, plan.uploads, uploaded)
            timer.lap("upload")
            logged_from = runtime.server.log_position()
            reporter = ProgressReporter(
                plan.progress, started=timer.start, send=send_progress or _no_progress, interval=settings.progress_interval
            )
            run = _run(runtime, plan.prompt, _options(runtime, reporter, clock))
            timer.lap("comfyui")
            logged = runtime.server.log_since(logged_from)
            warnings = [*plan.warnings, *plan.log_warnings(logged)]
            extras = {**plan.extras, **plan.log_extras(logged)}
            collected = plan.outputs.collect(runtime.files, run, produced)
            clock.check("delivering the video")
            delivered = _deliver(delivery, job_id, list(collected.artifacts), timer)
            return _answer(plan, run, collected, delivered, timer.result(run, reporter.marks), extras, warnings, runtime)
        finally:
            if not settings.keep_files:
                temp = settings.comfy.temp_files_dir
                own = ((settings.comfy.output_dir, files.folder), (temp, files.folder), (temp, VHS_METADATA))
                remove_job_files(settings.comfy.input_dir, settings.comfy.output_dir, uploaded, produced, own)


def _job(request: VideoRequest | CustomRequest, prepared: Mapping[str, PreparedInput], settings: Settings) -> Job:
    """The job a request is: its own graph's, or its task's (adapted to its media: the size of its image,
    the length of its track)."""
    if isinstance(request, CustomRequest):
        return CustomJob(request, prepared)
    task, limits = REGISTRY[request.task], settings.limits
    prepared = with_video_sound(prepared, request.keep_audio)
    request = adapt_to_media(request, prepared, limits)
    return StoredJob(task, task.adapt(request, prepared, limits) if task.adapt else request, prepared)


def _answer(
    plan: JobPlan,
    run: RunResult,
    collected: Collected,
    delivered: dict[str, Any],
    timings: dict[str, float],
    extras: Mapping[str, Any],
    warnings: list[str],
    runtime: Runtime,
) -> dict[str, Any]:
    """RunPod's output: the delivered files, then what the job made and how long it took."""
    return {
        **delivered,
        "filename": collected.filename,
        "prompt_id": run.prompt_id,
        "files_count": collected.files_count,
        **plan.fields,
        **({"content_type": collected.content_type} if collected.content_type else {}),
        **collected.facts,
        "timings": timings,
        **extras,
        **({"warnings": warnings} if warnings else {}),
        **_launch(runtime),
    }


def _no_progress(_update: dict[str, object]) -> None:
    pass


def _options(runtime: Runtime, reporter: ProgressReporter, clock: JobTime) -> RunOptions:
    settings = runtime.settings
    return RunOptions(
        timeout=settings.job_timeout,
        deadline=clock.deadline,
        stop=clock.stop or threading.Event(),
        on_message=reporter.on_message,
        reconnect_attempts=settings.ws_reconnect_attempts,
    )


def _upload(runtime: Runtime, uploads: Sequence[Upload], uploaded: list[str]) -> None:
    """Hand ComfyUI the job's media under their job-unique names (:attr:`Runtime.files`: written into
    the launched ComfyUI's input folder, the worker's own, or sent to an attached one over HTTP);
    ``uploaded`` collects them for the cleanup."""
    comfy = runtime.settings.comfy
    for upload in uploads:
        uploaded.append(upload.name)
        try:
            runtime.files.upload_file(upload.name, upload.data, upload.content_type)
        except OSError as exc:  # the worker's own disk: the client reports HTTP failures as ComfyUnavailable
            where = f"{upload.field} into ComfyUI's input folder {comfy.input_dir}"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"cannot write the job's {where}: {exc.strerror} (give the worker a larger disk)") from exc
            raise ComfyUnavailable(f"cannot write the job's {where}: {exc.strerror or exc}") from exc


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


def _deliver(delivery: Provider, job_id: str, artifacts: list[Artifact], timer: Timer) -> dict[str, Any]:
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
