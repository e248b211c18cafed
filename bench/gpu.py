"""The worker's speed on a real GPU, per launch configuration and size (docs/performance.md, "GPU numbers").

Two ways to run it:

- where a GPU and the models are (a pod, or a machine with a GPU): each configuration gets its own
  ``python handler.py --rp_serve_api`` with that configuration's environment, started fresh for
  each size, so the first job is cold (ComfyUI started, no model loaded);
- against a deployed endpoint (``--endpoint ID``, ``RUNPOD_API_KEY``): only what a job can ask for
  varies there (4-step); the endpoint's environment is what it is, and the other configurations
  are skipped with a line saying so.

Per configuration and size it sends ``--jobs`` i2v jobs (default 3: the first cold, the rest warm)
with a generated image, and keeps for each: the seconds the client waited, the worker's
``timings``, the progress updates (from them: seconds per sampling step of each expert), and,
locally, the VRAM in use (ComfyUI's ``GET /system_stats``: ``vram_total − vram_free`` of the
first device, polled every 0.5 s) and the ``system_stats`` snapshot (GPU, torch, ComfyUI, and
ComfyUI's command line: the attention and ``--fast`` it runs with).

Everything measured is a *record* (plain JSON); the summary and the Markdown table are pure
functions of it (:func:`summarize`, :func:`markdown`), and ``--from`` renders a saved record again.

Usage:
  python bench/gpu.py [--jobs 3] [--configs default,sage,fast,4step,compile] [--sizes 832x480x81,1280x720x81]
                      [--output bench-gpu.json] [--job-timeout 1800]
  python bench/gpu.py --endpoint <endpoint id> [--configs default,4step] [...]   (RUNPOD_API_KEY in the environment)
  python bench/gpu.py --from bench-gpu.json                                        (the table of a saved run)
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import textured_png_b64  # noqa: E402
from comfy_bootstrap.gpu import GpuInfo, read_gpus  # noqa: E402
from tests.harness import free_port, load_script, stop_worker_api  # noqa: E402

#: scripts/client.py: its endpoint calls (/run, /status, /cancel through RunPod's SDK) serve here too.
client = load_script("wan22_client", REPO / "scripts" / "client.py")

GIB = 1024**3
PROMPT = "a red fox trots through fresh snow at the edge of a pine forest, morning light, cinematic"
SEED = 42
#: Stages of the worker's progress updates that are not sampling (worker/progress.py).
NOT_SAMPLING = ("queued", "loading", "decode", "encode")
#: The environment variables the configurations set; taken out of the inherited environment so that
#: ``default`` is the worker's default whatever the shell holds.
SPEED_VARIABLES = ("COMFY_ATTENTION", "COMFY_FAST", "TORCH_COMPILE")
#: Seconds between two ``/status`` calls on an endpoint: each answer holds the latest progress update.
STATUS_POLL = 1.0


@dataclass(frozen=True)
class Config:
    """One configuration: the worker's environment (local runs only) and fields added to each job."""

    name: str
    about: str
    env: dict[str, str] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)


CONFIGS = {
    c.name: c
    for c in (
        Config("default", "the worker's defaults (PyTorch attention, no --fast)"),
        Config("sage", "COMFY_ATTENTION=sage", env={"COMFY_ATTENTION": "sage"}),
        Config("fast", "COMFY_FAST=auto", env={"COMFY_FAST": "auto"}),
        Config("4step", 'job field "speed": "4step"', job={"speed": "4step"}),
        Config("compile", "TORCH_COMPILE=true", env={"TORCH_COMPILE": "true"}),
    )
}
SIZES = ((832, 480, 81), (1280, 720, 81))


# ================================================================================ the record → table


def stage_start(stage: str, steps: int) -> int:
    """The step a sampling stage of the bench's i2v jobs starts from: the high-noise expert runs
    [0, split), the low-noise one [split, steps), at the default split ``steps // 2`` (docs/api.md)."""
    return steps // 2 if stage == "low_noise" else 0


def per_step(progress: Sequence[dict[str, Any]], stage: str) -> float | None:
    """Seconds per sampling step of ``stage`` from the progress updates of one job.

    An update says how many steps of the job are done (``step``) at ``elapsed`` seconds (the
    worker's clock). Steps are timed from the first completed step of the stage to the last one
    seen, so the expert's loading before its first step is left out; None with fewer than two
    completed steps seen (updates polled from an endpoint can miss some).
    """
    points = sorted((u["elapsed"], u["step"]) for u in progress if u.get("stage") == stage and u.get("elapsed") is not None)
    if not points:
        return None
    start = stage_start(stage, max(int(u.get("steps") or 0) for u in progress if u.get("stage") == stage))
    first_seen: dict[int, float] = {}
    for elapsed, step in points:
        if step > start:
            first_seen.setdefault(step, elapsed)
    if len(first_seen) < 2:
        return None
    (s0, t0), (s1, t1) = min(first_seen.items()), max(first_seen.items())
    return (t1 - t0) / (s1 - s0)


def sampling_stages(progress: Iterable[dict[str, Any]]) -> list[str]:
    """The sampling stages of the updates, in the order they came."""
    return list(dict.fromkeys(u["stage"] for u in progress if u.get("stage") and u["stage"] not in NOT_SAMPLING))


def launch_from_argv(argv: Sequence[str]) -> dict[str, Any]:
    """The attention and ``--fast`` of ComfyUI's command line (``system_stats``' ``argv``)."""
    attention = "xformers or pytorch (no flag)"
    fast: list[str] = []
    for index, arg in enumerate(argv):
        if arg.startswith("--use-") and arg.endswith("-attention"):
            attention = arg.removeprefix("--use-").removesuffix("-attention").removesuffix("-cross")
        elif arg == "--fast":
            names = []
            for follower in argv[index + 1 :]:
                if follower.startswith("-"):
                    break
                names.append(follower)
            fast = names or ["all"]
    return {"attention": attention, "fast": fast}


def device_name(system_stats: dict[str, Any]) -> str | None:
    """The first device's name as ComfyUI reports it ("cuda:0 NVIDIA L40S : cudaMallocAsync" → "NVIDIA L40S")."""
    devices = system_stats.get("devices") or []
    if not devices:
        return None
    name = str(devices[0].get("name", ""))
    name = name.split(" ", 1)[1] if name.startswith("cuda:") and " " in name else name
    return name.rsplit(" : ", 1)[0] or None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_run(run: dict[str, Any]) -> dict[str, Any]:
    """One row: jobs that completed, the cold (first) job's seconds, the warm ones' median, the
    median seconds per step of each sampling stage, the VRAM peak, and what ComfyUI ran with."""
    size = f"{run['width']}x{run['height']}x{run['length']}"
    jobs = run.get("jobs") or []
    ok = [job for job in jobs if job.get("status") == "COMPLETED"]
    warm = [job for job in jobs[1:] if job.get("status") == "COMPLETED"]
    stages = list(dict.fromkeys(s for job in ok for s in sampling_stages(job.get("progress") or [])))
    timed = warm or ok  # warm jobs' steps; the cold one's when it is all there is
    steps = {
        stage: _median([v for job in timed if (v := per_step(job.get("progress") or [], stage)) is not None]) for stage in stages
    }
    peaks = [job["vram_peak"] for job in jobs if job.get("vram_peak") is not None]
    argv = ((run.get("system_stats") or {}).get("system") or {}).get("argv")
    reported = next((job["launch"] for job in ok if job.get("launch")), None)
    launch = launch_from_argv(argv) if argv else reported or {}
    return {
        "config": run["config"],
        "size": size,
        "skipped": run.get("skipped"),
        "jobs": len(jobs),
        "ok": len(ok),
        "boot_s": run.get("boot_s"),
        "cold_s": jobs[0]["seconds"] if jobs and jobs[0].get("status") == "COMPLETED" else None,
        "warm_median_s": _median([job["seconds"] for job in warm]),
        "warm_execution_median_s": _median(
            [job["timings"]["execution"] for job in warm if "execution" in (job.get("timings") or {})]
        ),
        "warm_jobs": len(warm),
        "s_per_step": steps,
        "vram_peak_gib": round(max(peaks) / GIB, 2) if peaks else None,
        "attention": launch.get("attention"),
        "fast": launch.get("fast"),
        "errors": [f"job {i + 1}: {job.get('error')}" for i, job in enumerate(jobs) if job.get("status") != "COMPLETED"],
    }


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """The whole run: the machine (GPU, driver, torch, ComfyUI), one row per configuration and size, notes."""
    stats = next((run["system_stats"] for run in record.get("runs", []) if run.get("system_stats")), None) or {}
    system = stats.get("system") or {}
    gpus = record.get("gpus") or []
    reported = next((job["launch"] for run in record.get("runs", []) for job in run.get("jobs") or [] if job.get("launch")), {})
    machine = {
        "gpu": gpus[0]["name"] if gpus else device_name(stats) or reported.get("gpu"),
        "gpu_memory_mib": gpus[0]["memory_mib"] if gpus else None,
        "driver": gpus[0]["driver"] if gpus else reported.get("driver"),
        "torch": system.get("pytorch_version") or reported.get("torch"),
        "comfyui": system.get("comfyui_version") or reported.get("comfyui"),
        "worker": record.get("worker_version"),
    }
    rows = [summarize_run(run) for run in record.get("runs", [])]
    return {
        "mode": record.get("mode"),
        "endpoint": record.get("endpoint"),
        "started": record.get("started"),
        "jobs_per_run": record.get("jobs_per_run"),
        "machine": machine,
        "rows": rows,
        "notes": list(record.get("notes") or []),
    }


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the Markdown docs/performance.md collects: a header, the table, the notes."""
    m = summary["machine"]
    memory = f" ({m['gpu_memory_mib']} MiB)" if m.get("gpu_memory_mib") else ""
    where = (
        f"endpoint {summary['endpoint']} (its environment is fixed: only per-job settings vary)"
        if summary["mode"] == "endpoint"
        else "local (python handler.py --rp_serve_api per configuration and size)"
    )
    lines = [
        f"GPU: {m['gpu'] or 'n/a'}{memory}, driver {m['driver'] or 'n/a'}; torch {m['torch'] or 'n/a'}; "
        f"ComfyUI {m['comfyui'] or 'n/a'}; worker {m['worker'] or 'n/a'}",
        f"Run: {where}; {summary['jobs_per_run']} i2v jobs per configuration and size, the first cold; {summary['started']}",
        "",
    ]
    measured = [row for row in summary["rows"] if not row["skipped"]]
    stages = list(dict.fromkeys(s for row in measured for s in row["s_per_step"])) or ["high_noise", "low_noise"]
    header = ["configuration", "size", "jobs ok", "boot s", "cold s", "warm s (median)", "warm execution s"]
    header += [f"{stage} s/step" for stage in stages] + ["VRAM peak GiB", "attention", "--fast"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in measured:
        fast = row["fast"]
        cells = [
            row["config"], row["size"], f"{row['ok']}/{row['jobs']}", _num(row["boot_s"], 1), _num(row["cold_s"], 1),
            _num(row["warm_median_s"], 1), _num(row["warm_execution_median_s"], 1),
            *(_num(row["s_per_step"].get(stage), 2) for stage in stages),
            _num(row["vram_peak_gib"], 1), row["attention"] or "n/a",
            "n/a" if fast is None else " ".join(fast) or "none",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    notes = list(summary["notes"])
    notes += [f"{row['config']} {row['size']}: not run: {row['skipped']}" for row in summary["rows"] if row["skipped"]]
    notes += [f"{row['config']} {row['size']}: {error}" for row in measured for error in row["errors"]]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


# ================================================================================ measuring


def parse_sizes(raw: str) -> list[tuple[int, int, int]]:
    sizes = []
    for part in raw.split(","):
        try:
            width, height, length = (int(x) for x in part.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: expected WIDTHxHEIGHTxFRAMES, e.g. 832x480x81") from None
        sizes.append((width, height, length))
    return sizes


def parse_configs(raw: str) -> list[Config]:
    names = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown configuration {', '.join(unknown) or '(none)'}; known: {', '.join(CONFIGS)}")
    return [CONFIGS[name] for name in names]


def job_input(config: Config, width: int, height: int, length: int, image: str) -> dict[str, Any]:
    return {
        "task": "i2v",
        "prompt": PROMPT,
        "image": image,
        "options": {"width": width, "height": height, "length": length, "seed": SEED},
        **config.job,
    }


class ProgressSink:
    """Receives the worker's progress updates: the RunPod SDK posts them to ``RUNPOD_WEBHOOK_POST_OUTPUT``
    (``{"status": "IN_PROGRESS", "output": <update>}``), which a local run points here."""

    def __init__(self) -> None:
        self.updates: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                job_id = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                try:
                    message = json.loads(body)
                except ValueError:
                    message = {}
                if message.get("status") == "IN_PROGRESS" and isinstance(message.get("output"), dict):
                    with sink._lock:
                        sink.updates.setdefault(job_id, []).append(message["output"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/progress/$ID?bench=gpu"

    def take(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.updates.get(job_id, []))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class VramPoller:
    """Polls ComfyUI's ``/system_stats`` in a thread: the peak of ``vram_total − vram_free`` of the
    first device since :meth:`reset`, and the first full answer (the snapshot the table reads)."""

    def __init__(self, comfy_url: str, interval: float = 0.5):
        self.comfy_url, self.interval = comfy_url, interval
        self.snapshot: dict[str, Any] | None = None
        self.peak: int | None = None
        self.total: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.peak = None

    def _run(self) -> None:
        import requests

        while not self._stop.wait(self.interval):
            try:
                stats = requests.get(f"{self.comfy_url}/system_stats", timeout=2).json()
                device = stats["devices"][0]
                used = int(device["vram_total"]) - int(device["vram_free"])
            except Exception:  # not up yet, busy, or an answer without devices: try again
                continue
            self.snapshot = self.snapshot or stats
            self.total = int(device["vram_total"])
            self.peak = used if self.peak is None else max(self.peak, used)

    def __enter__(self) -> VramPoller:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextmanager
def local_worker(config: Config, sink: ProgressSink, job_timeout: float, log: Path) -> Iterator[tuple[str, str, float]]:
    """``python handler.py --rp_serve_api`` with the configuration's environment; yields its API's URL,
    ComfyUI's URL and the seconds from the worker's start until ComfyUI answered."""
    import requests

    api_port = free_port()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wan22-bench-gpu-") as tmp:
        env = {key: value for key, value in os.environ.items() if key not in SPEED_VARIABLES}
        env.pop("RUNPOD_LOG_LEVEL", None)
        env.update(
            config.env,
            COMFY_PORT=str(free_port()),
            WORKER_DIR=str(Path(tmp) / "work"),
            JOB_TIMEOUT=str(job_timeout),
            PROGRESS_INTERVAL="0",
            RUNPOD_WEBHOOK_POST_OUTPUT=sink.url,
        )
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_port", str(api_port)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            api, comfy = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{env['COMFY_PORT']}"
            deadline = time.monotonic() + 600
            for url in (f"{comfy}/system_stats", f"{api}/docs"):  # jobs then find ComfyUI up: cold = models
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the worker exited with {proc.returncode} while starting; see {log}")
                    try:
                        requests.get(url, timeout=2).raise_for_status()
                        break
                    except requests.RequestException:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{url} did not answer within 600 s of the worker's start; see {log}") from None
                        time.sleep(0.25)
                if url.endswith("/system_stats"):
                    booted = time.monotonic() - started
            yield api, comfy, booted
        finally:
            stop_worker_api(proc, timeout=60)


def run_local(config: Config, size: tuple[int, int, int], jobs: int, job_timeout: float, log: Path) -> dict[str, Any]:
    """One configuration at one size on a fresh local worker."""
    run = _new_run(config, size)
    image = textured_png_b64(size[0], size[1], noise=48)
    sink = ProgressSink()
    try:
        with local_worker(config, sink, job_timeout, log) as (api, comfy, booted), VramPoller(comfy) as poller:
            run["boot_s"] = round(booted, 3)
            for index in range(jobs):
                run["jobs"].append(_local_job(api, job_input(config, *size, image), job_timeout, sink, poller))
                _say(f"  {config.name} {'x'.join(map(str, size))} job {index + 1}/{jobs}: {_job_line(run['jobs'][-1])}")
            run["system_stats"] = poller.snapshot
    except RuntimeError as exc:
        run["skipped"] = f"the worker did not start: {exc}"
    finally:
        sink.close()
    return run


def _local_job(api: str, job: dict[str, Any], job_timeout: float, sink: ProgressSink, poller: VramPoller) -> dict[str, Any]:
    """One ``/runsync`` job, with its progress updates and the VRAM peak while it ran."""
    import requests

    poller.reset()
    started = time.monotonic()
    try:
        body = requests.post(f"{api}/runsync", json={"input": job}, timeout=job_timeout + 120).json()
    except requests.RequestException as exc:
        body = {"status": "FAILED", "error": f"{type(exc).__name__}: {exc}"}
    seconds = time.monotonic() - started
    time.sleep(0.5)  # the SDK posts each update from a thread of its own: let the last ones land
    return _job_result(body, seconds, sink.take(str(body.get("id"))), poller.peak, poller.total)


def _new_run(config: Config, size: tuple[int, int, int]) -> dict[str, Any]:
    width, height, length = size
    return {"config": config.name, "env": config.env, "job": config.job, "width": width, "height": height,
            "length": length, "jobs": [], "system_stats": None}  # fmt: skip


def run_endpoint(config: Config, size: tuple[int, int, int], jobs: int, job_timeout: float, endpoint: str) -> dict[str, Any]:
    """One configuration at one size as jobs of a deployed endpoint (RUNPOD_API_KEY; the SDK's base URL)."""
    run = _new_run(config, size)
    api = client.EndpointApi(endpoint, os.environ["RUNPOD_API_KEY"])
    image = textured_png_b64(size[0], size[1], noise=48)
    for index in range(jobs):
        started = time.monotonic()
        body, progress = _endpoint_job(api, job_input(config, *size, image), job_timeout)
        result = _job_result(body, time.monotonic() - started, progress, None, None)
        result["delay_ms"], result["execution_ms"] = body.get("delayTime"), body.get("executionTime")
        run["jobs"].append(result)
        _say(f"  {config.name} {'x'.join(map(str, size))} job {index + 1}/{jobs}: {_job_line(result)}")
    return run


def _endpoint_job(api: Any, job: dict[str, Any], job_timeout: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``/run``, then ``/status`` every :data:`STATUS_POLL` s until the job ends (the client's loop): its
    last status and the progress updates seen (each ``/status`` answer holds the latest one)."""
    progress: list[dict[str, Any]] = []

    def record(status: str, update: Any) -> None:
        if status == "IN_PROGRESS" and isinstance(update, dict) and (not progress or progress[-1] != update):
            progress.append(update)

    started = time.monotonic()
    allowed = job_timeout + 600  # the queue and a cold worker come on top
    try:
        job_id = api.submit({"input": job})
        try:
            return client.follow(api, job_id, client.Display(io.StringIO(), record), started, started + allowed, STATUS_POLL), progress
        except client.JobTimeout:
            api.cancel(job_id)
            return {"status": "FAILED", "error": f"no answer within {allowed:.0f} s; cancelled"}, progress
    except client.ClientError as exc:
        return {"status": "FAILED", "error": str(exc)}, progress


def _job_result(
    body: dict[str, Any], seconds: float, progress: list[dict[str, Any]], peak: int | None, total: int | None
) -> dict[str, Any]:
    output = body.get("output") if isinstance(body.get("output"), dict) else {}
    keep = ("stage", "step", "steps", "elapsed")
    return {
        "seconds": round(seconds, 3),
        "status": body.get("status"),
        "error": body.get("error"),
        "timings": output.get("timings"),
        "launch": output.get("launch"),
        "progress": [{key: update.get(key) for key in keep} for update in progress],
        "vram_peak": peak,
        "vram_total": total,
    }


def _job_line(job: dict[str, Any]) -> str:
    if job["status"] != "COMPLETED":
        return f"{job['status']} after {job['seconds']:.1f} s: {job['error']}"
    return f"{job['seconds']:.1f} s"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _worker_version() -> str | None:
    try:
        return (REPO / "VERSION").read_text().strip()
    except OSError:
        return None


def _gpu_record(gpus: Sequence[GpuInfo] | None) -> list[dict[str, Any]] | None:
    if gpus is None:
        return None
    return [{"name": g.name, "compute_capability": f"{g.compute_capability[0]}.{g.compute_capability[1]}",
             "driver": g.driver, "memory_mib": g.memory_mib} for g in gpus]  # fmt: skip


def measure(
    args: argparse.Namespace,
    gpus: Sequence[GpuInfo] | None,
    save: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run every configuration at every size; the record is saved after each run."""
    record: dict[str, Any] = {
        "bench": "gpu",
        "command": shlex.join(["python", "bench/gpu.py", *sys.argv[1:]]),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "endpoint" if args.endpoint else "local",
        "endpoint": args.endpoint,
        "jobs_per_run": args.jobs,
        "worker_version": _worker_version(),
        "gpus": _gpu_record(gpus),
        "notes": [],
        "runs": [],
    }
    inherited = [name for name in SPEED_VARIABLES if os.environ.get(name)]
    if inherited and not args.endpoint:
        record["notes"].append(f"{', '.join(inherited)} from the shell ignored: each configuration sets its own")
    if args.endpoint:
        record["notes"].append("cold = the first job of a configuration; on an endpoint it is cold only if no worker was warm")
    for config in args.configs:
        for width, height, length in args.sizes:
            if args.endpoint and config.env:
                run = {**_new_run(config, (width, height, length)),
                       "skipped": f"{config.about} is the endpoint's environment, which a job cannot change"}  # fmt: skip
            elif args.endpoint:
                run = run_endpoint(config, (width, height, length), args.jobs, args.job_timeout, args.endpoint)
            else:
                run = run_local(config, (width, height, length), args.jobs, args.job_timeout, args.log)
            record["runs"].append(run)
            save(record)
    return record


def refusal(args: argparse.Namespace, gpus: list[GpuInfo] | None) -> str | None:
    """Why this run cannot start (one line), or None."""
    if args.endpoint:
        return None if os.environ.get("RUNPOD_API_KEY") else "--endpoint needs RUNPOD_API_KEY in the environment"
    if not gpus:
        seen = "nvidia-smi is not installed" if gpus is None else "nvidia-smi lists no GPU"
        return (
            f"no NVIDIA GPU here ({seen}): run it on a machine with a GPU and the models, "
            "or against a deployed endpoint with --endpoint ID"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3, help="jobs per configuration and size (the first is cold)")
    parser.add_argument(
        "--configs", type=parse_configs, default=list(CONFIGS.values()), help=f"comma list of {', '.join(CONFIGS)}"
    )
    parser.add_argument("--sizes", type=parse_sizes, default=list(SIZES), help="comma list of WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--endpoint", help="a deployed endpoint's id (RUNPOD_API_KEY): only per-job settings vary")
    parser.add_argument(
        "--job-timeout", type=float, default=1800.0, help="seconds one job may take (JOB_TIMEOUT of local workers)"
    )
    parser.add_argument("--output", type=Path, help="the JSON to write (default bench-gpu-<UTC time>.json)")
    parser.add_argument("--log", type=Path, help="the local workers' log (default: next to the JSON)")
    parser.add_argument("--from", dest="from_record", type=Path, help="print the table of a saved JSON and exit")
    args = parser.parse_args(argv)

    if args.from_record:
        saved = json.loads(args.from_record.read_text())
        print(markdown(summarize(saved.get("record", saved))), end="")
        return 0
    gpus = None if args.endpoint else read_gpus()
    problem = refusal(args, gpus)
    if problem:
        print(f"bench/gpu.py: {problem}", file=sys.stderr)
        return 2
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    args.output = args.output or Path(f"bench-gpu-{stamp}.json")
    args.log = args.log or args.output.with_suffix(".log")

    def save(record: dict[str, Any]) -> None:
        args.output.write_text(json.dumps({"summary": summarize(record), "record": record}, indent=1) + "\n")

    _say(f"bench/gpu.py: writing {args.output}" + ("" if args.endpoint else f", workers' log {args.log}"))
    record = measure(args, gpus, save)
    print(markdown(summarize(record)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
