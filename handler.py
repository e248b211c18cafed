"""RunPod entry point: boot, then for each job run the pipeline in a thread and map the result or error.

Everything about ComfyUI lives in ``comfy_bootstrap/``, everything about a job in ``worker/``.
The handler is ``async`` because RunPod can only cancel async handlers (it cancels the task);
the blocking pipeline runs in a thread that watches a stop flag, so a cancelled job interrupts
its ComfyUI prompt and the worker takes the next job normally.

Boot order: ComfyUI is launched first (it needs seconds to start), then the RunPod SDK is imported
(it needs about two) and its job loop started without waiting for ComfyUI; a job that arrives
early waits for ComfyUI's readiness (``COMFY_BOOT_TIMEOUT``).
"""

from __future__ import annotations

import os
import sys

from worker import usage

if __name__ == "__main__" and usage.wants_help(sys.argv):  # before the SDK, which would boot first
    print(usage.HELP, end="")
    sys.exit(0)

# The SDK logs job inputs (the image) and outputs (the video) at its default level DEBUG, and the
# whole result at INFO in `python handler.py` test mode: set its level before it is imported.
_TEST_MODE = "--rp_serve_api" not in sys.argv and "RUNPOD_WEBHOOK_GET_JOB" not in os.environ
os.environ.setdefault("RUNPOD_LOG_LEVEL", "WARN" if _TEST_MODE else "INFO")

import asyncio  # noqa: E402
import contextvars  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

try:
    from comfy_bootstrap.child import stop_on_exit
    from comfy_bootstrap.errors import ComfyBootError, ComfyError, ComfyUnavailable
    from comfy_bootstrap.gpu import read_gpus
    from comfy_bootstrap.server import comfy_server
    from worker.cached_models import link_cached_models
    from worker.errors import WorkerError
    from worker.health import Verdict, WorkerHealth, as_storage_full
    from worker.logs import JOB_ID, configure_logging
    from worker.lora_files import LoraCache
    from worker.loras import register_lora_cache
    from worker.pipeline import Runtime, generate_video
    from worker.prefetch import start_prefetch
    from worker.preflight import comfy_missing, model_paths, preflight
    from worker.settings import ConfigError, Settings
    from worker.warmup import Warmup, start_warmup
except ModuleNotFoundError as _missing:  # a Python without the worker's requirements (outside .venv)
    if __name__ != "__main__":
        raise
    sys.exit(usage.missing_package(_missing))

log = logging.getLogger("wan22.handler")

#: The codes the handler itself answers with, beside those of the error classes.
NOT_READY, INTERNAL_ERROR = "worker_not_ready", "internal_error"
#: How long a cancelled job waits for its thread to interrupt ComfyUI and clean up.
CANCEL_GRACE = 15.0
#: RunPod's platform variables: only there does ``refresh_worker`` replace the worker.
ON_RUNPOD = bool(os.environ.get("RUNPOD_POD_ID") or os.environ.get("RUNPOD_WEBHOOK_GET_JOB"))

RUNTIME: Runtime | None = None
#: Whether this worker should ask RunPod to replace it after a failure (worker/health.py).
HEALTH = WorkerHealth(on_runpod=ON_RUNPOD)
WARMUP: Warmup | None = None


def utf8_safe(text: str) -> str:
    """Escape what UTF-8 cannot encode (lone surrogates a client sent, quoted back in an error).

    RunPod posts results as UTF-8: one unencodable character would lose the whole answer
    (the local API answers HTTP 500, the hosted post raises).
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(exc: WorkerError | ComfyError, verdict: Verdict | None = None) -> dict[str, Any]:
    """RunPod's failed-job answer: ``error`` must be one string (a dict breaks /runsync).

    ``refresh_worker`` is a separate key: RunPod replaces the worker after this job. The health
    verdict adds it (GPU fault, persistent out-of-memory) and appends its advice to the string.
    """
    message = f"{exc.code}: {utf8_safe(str(exc))}"
    if verdict is not None and verdict.note:
        message = f"{message.rstrip(' .')}. {verdict.note}"
    response: dict[str, Any] = {"error": message}
    if exc.refresh_worker or (verdict is not None and verdict.refresh_worker):
        response["refresh_worker"] = True
    return response


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job; every failure becomes one clear error string, plus ``refresh_worker`` when the
    health policy (worker/health.py) says this worker should be replaced."""
    started = time.monotonic()  # JOB_TIMEOUT counts from here, through every stage
    job_id = str(job.get("id", "unknown"))
    JOB_ID.set(job_id)
    if RUNTIME is None:
        return {"error": f"{NOT_READY}: the worker was not started through handler.py's main()"}
    if WARMUP is not None and WARMUP.running:
        log.info("the warm-up still runs: this job waits behind it in ComfyUI's queue")
    stop = threading.Event()
    work = functools.partial(
        generate_video, job.get("input"), job_id, RUNTIME, stop=stop, send_progress=_progress_sender(job), started=started
    )
    future = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, work)
    try:
        result = await asyncio.shield(future)
    except asyncio.CancelledError:
        log.warning("job cancelled: interrupting ComfyUI")
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(future), CANCEL_GRACE)
        except BaseException:  # the job is gone either way; its own error is logged below
            pass
        raise
    except (WorkerError, ComfyError) as failure:
        exc = as_storage_full(failure)  # a node's ENOSPC is the disk's, not the job's (worker/health.py)
        setup = comfy_missing(RUNTIME.settings.comfy) if isinstance(exc, ComfyUnavailable) else None
        if setup:  # not installed: the fix, not restarts or a new worker, which would fail the same way
            log.warning("job failed: %s: %s", exc.code, setup)
            return {"error": f"{exc.code}: {setup}"}
        log.warning("job failed: %s: %s", exc.code, utf8_safe(str(exc)))
        # After a CUDA error the policy checks the GPU and restarts ComfyUI: seconds, off the event loop.
        check = functools.partial(HEALTH.after_failure, exc, RUNTIME.server)
        verdict = await asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, check)
        if verdict.refresh_worker and ON_RUNPOD:
            log.error("asking RunPod to replace this worker (refresh_worker): %s", verdict.reason)
        elif verdict.refresh_worker:
            log.error("this worker should be restarted (on RunPod it would now be replaced): %s", verdict.reason)
        return error_response(exc, verdict)
    except Exception as exc:  # a bug in the worker: answer, log the traceback, keep serving
        log.exception("unexpected error")
        return {"error": f"{INTERNAL_ERROR}: {type(exc).__name__}: {utf8_safe(str(exc))}"}
    HEALTH.after_success()
    log.info("job done: %s, timings %s", result["filename"], result["timings"])
    return result


def _progress_sender(job: dict[str, Any]):
    """Progress goes to RunPod only where there is a RunPod to receive it (not in local tests)."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return None
    from runpod.serverless import progress_update

    return lambda update: progress_update(job, update)


def main() -> None:
    """Boot: settings → logging → launch ComfyUI → what is missing → RunPod SDK → warm-up → job loop.

    Nothing here waits for ComfyUI: the first job (or the warm-up, ``WARMUP=true``, in a thread)
    waits for it, so neither counts against RunPod's 7-minute start limit.
    """
    global RUNTIME, WARMUP
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        configure_logging("INFO")
        log.error("%s", exc)
        sys.exit(2)
    configure_logging(settings.log_level)
    loras = LoraCache.from_settings(settings)
    settings = register_lora_cache(settings, loras)  # ComfyUI must know the cache folder from its start
    settings = link_cached_models(settings)  # and the cached model's files, ahead of the volume's
    server = comfy_server(settings.comfy)
    stop_on_exit(server.shutdown)
    try:
        server.launch()
    except ComfyBootError as exc:  # each job tries again and, failing, answers with this reason
        log.error("%s: ComfyUI could not be started: %s", exc.code, exc)
    log.info("settings: %s", settings.describe())
    if settings.prefetch_models:
        start_prefetch(model_paths(settings, settings.warmup_task))
    missing = preflight(settings, read_gpus())
    if missing:
        log.warning("the worker starts, but cannot make videos until this is fixed:\n%s", "\n".join(f"- {m}" for m in missing))
    import runpod

    try:
        RUNTIME = Runtime.create(settings, server=server, loras=loras)
    except WorkerError as exc:  # a broken stored graph: a task this worker could never run
        log.error("%s: %s", exc.code, exc)
        sys.exit(2)
    WARMUP = start_warmup(RUNTIME)
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
