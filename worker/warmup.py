"""Warm-up: one tiny job through the real graph at boot, so the first user job finds the models loaded.

Opt-in with ``WARMUP=true``. The warm-up is an ordinary job of ``WARMUP_TASK`` for
:func:`worker.pipeline.generate_video` (generated 64×64 images for the task's image fields, 5
frames, the default steps, a fixed seed), so it loads exactly what a real job of that task loads:
its diffusion models with their LoRAs, the text encoder and the VAE, from the network volume.

**When it runs: in a background thread, started right before the worker takes jobs.**
Reading ~36 GB of weights from a network volume takes minutes (~90–180 s at 200–400 MB/s, more on
a slow volume), on top of ComfyUI's own start, and RunPod marks a worker unhealthy when its cold
start passes 7 minutes (``RUNPOD_INIT_TIMEOUT``). Warming up *before* ``runpod.serverless.start``
would spend that budget. Running it alongside costs nothing: a job that arrives during the warm-up
is queued by ComfyUI behind it and finds the loading already under way, which it would otherwise
have had to do itself. Its ``JOB_TIMEOUT`` counts from its own queueing, so it also covers the wait;
the warm-up's sampling at 64×64 takes seconds once the models are in memory.

**Its bound:** ``WARMUP_TIMEOUT`` (default 600 s) replaces ``JOB_TIMEOUT`` for the warm-up's prompt;
when it passes, the prompt is interrupted exactly like a timed-out job (and ComfyUI restarted if it
does not stop).

**Never in the way:** the warm-up never raises; a failure is logged with its error code and
message (``warm-up failed after …: <code>: <message>``) and the worker keeps taking jobs; a crashed
or hung ComfyUI is restarted by the next job's ``ensure_alive`` as after any failed job. It sends
no progress updates and removes its files, even with ``KEEP_FILES=true``; its video always stays in
memory (``output_mode`` base64), never uploaded.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from comfy_bootstrap.errors import ComfyError, ExecutionTimeout
from worker.errors import WorkerError
from worker.logs import JOB_ID
from worker.pipeline import Runtime, generate_video
from worker.tasks import REGISTRY
from worker.tasks.base import Task

log = logging.getLogger(__name__)

#: The job id the warm-up runs (and logs) under.
WARMUP_JOB_ID = "warmup"
WARMUP_SIZE = 64
WARMUP_LENGTH = 5
WARMUP_SEED = 1
WARMUP_PROMPT = "warm-up: a grey square"


@dataclass(frozen=True)
class WarmupResult:
    """How the warm-up went: ``error`` is ``"<code>: <message>"`` when it failed."""

    ok: bool
    seconds: float
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def warmup_input(task: Task) -> dict[str, Any]:
    """The warm-up's job input: a generated image for each of the task's image fields, the smallest
    useful clip, default steps, fixed seed."""
    buf = io.BytesIO()
    Image.new("RGB", (WARMUP_SIZE, WARMUP_SIZE), (128, 128, 128)).save(buf, "PNG")
    image = base64.b64encode(buf.getvalue()).decode("ascii")
    return {
        "task": task.name,
        "prompt": WARMUP_PROMPT,
        **{slot.field: image for slot in task.inputs if slot.kind == "image"},
        "output_mode": "base64",
        "options": {"width": WARMUP_SIZE, "height": WARMUP_SIZE, "length": WARMUP_LENGTH, "seed": WARMUP_SEED},
    }


def warmup_runtime(runtime: Runtime) -> Runtime:
    """The same runtime (same ComfyUI, client, workflow) with the warm-up's bound and no files kept."""
    settings = dataclasses.replace(runtime.settings, job_timeout=runtime.settings.warmup_timeout, keep_files=False)
    return dataclasses.replace(runtime, settings=settings)


def run_warmup(runtime: Runtime, *, stop: threading.Event | None = None) -> WarmupResult:
    """Run the warm-up job now (blocking), log how it went, and never raise."""
    token = JOB_ID.set(WARMUP_JOB_ID)  # every log line of the warm-up reads [warmup]
    try:
        return _warm_up(runtime, stop)
    finally:
        JOB_ID.reset(token)


def _warm_up(runtime: Runtime, stop: threading.Event | None) -> WarmupResult:
    started = time.monotonic()
    timeout = runtime.settings.warmup_timeout
    task = REGISTRY[runtime.settings.warmup_task]
    log.info(
        "warm-up: a %dx%d, %d-frame %s job to load its models (WARMUP_TIMEOUT=%g s); "
        "jobs that arrive meanwhile wait behind it in ComfyUI's queue",
        WARMUP_SIZE, WARMUP_SIZE, WARMUP_LENGTH, task.name, timeout,
    )  # fmt: skip
    try:
        out = generate_video(warmup_input(task), WARMUP_JOB_ID, warmup_runtime(runtime), stop=stop, send_progress=None)
    except ExecutionTimeout:
        error = f"timeout: the warm-up did not finish within WARMUP_TIMEOUT={timeout:g} s and was interrupted"
        return _failed(started, error)
    except (WorkerError, ComfyError) as exc:
        return _failed(started, f"{exc.code}: {exc}")
    except Exception as exc:  # a bug: the worker must still take jobs
        log.exception("warm-up: unexpected error")
        return _failed(started, f"internal_error: {type(exc).__name__}: {exc}")
    seconds = round(time.monotonic() - started, 3)
    timings = out.get("timings", {})
    log.info(
        "warm-up done in %.1f s (ComfyUI %.1f s): the models are loaded%s",
        seconds, timings.get("comfyui", timings.get("execution", 0.0)),
        " and compiled (TORCH_COMPILE) at the warm-up's size" if runtime.settings.torch_compile else "",
    )  # fmt: skip
    return WarmupResult(True, seconds, timings=timings)


def _failed(started: float, error: str) -> WarmupResult:
    seconds = round(time.monotonic() - started, 3)
    log.error("warm-up failed after %.1f s: %s; the worker keeps taking jobs", seconds, error)
    return WarmupResult(False, seconds, error=error)


class Warmup:
    """The warm-up running in a daemon thread; :meth:`wait` returns its result."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.result: WarmupResult | None = None
        self._thread = threading.Thread(target=self._run, name="warmup", daemon=True)

    def start(self) -> Warmup:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> WarmupResult | None:
        """The result once the warm-up ended, or None if it still runs after ``timeout`` seconds."""
        self._thread.join(timeout)
        return self.result

    def _run(self) -> None:
        self.result = run_warmup(self.runtime)


def start_warmup(runtime: Runtime) -> Warmup | None:
    """Start the warm-up in the background when ``WARMUP=true``; None (and nothing runs) otherwise."""
    if not runtime.settings.warmup:
        log.info("warm-up off (WARMUP=false): the first job loads the models")
        return None
    return Warmup(runtime).start()
