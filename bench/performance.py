"""The worker's performance figures against the ComfyUI test double (docs/performance.md).

Four measurements, each on a fresh ``python handler.py --rp_serve_api`` with the double as its
ComfyUI child — the worker's own cost, not the GPU's (the double "executes" a prompt by writing
a real H.264 MP4 of the requested size, no model runs):

1. overhead per job at 832×480, 81 frames: ``timings.total − timings.execution`` p50/p95
   (``bench/overhead.py``, reused);
2. boot: process start → ComfyUI child launched → ComfyUI (the double) answering → ``/runsync``
   answering a job, over several boots;
3. memory: RSS of the worker process alone and of its ComfyUI child over a soak of small jobs
   (64×64, 5 frames): after boot, after job 5, after the last job, peak (kernel high-water mark
   and 10 ms sampling), growth;
4. output path cost: what returning the video as base64 costs per job — reading and encoding it
   in the worker, the response size, RunPod's API serialising and sending it — plus the input
   image's base64 path, and the raw encode/decode speed; and the S3 path (upload + presign to an S3
   API server on 127.0.0.1, the answer's size, the client's download of the link).

Usage: python bench/performance.py [--jobs 20] [--boots 5] [--soak-jobs 50] [--output-path both]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from common import REPO, bench_env, comfy_child, ms, p50_p95, running_worker, textured_png_b64
from overhead import OverheadRun, measure_overhead, print_overhead

from tests.harness import free_port, png_b64, stop_worker_api

MB = 2**20


# --- 2. Boot ----------------------------------------------------------------------------------------


@dataclass
class Boot:
    """Seconds from ``Popen`` of the worker to each boot milestone."""

    comfy_launched: float  # the ComfyUI child process exists
    comfy_ready: float  # ComfyUI (the double) answers GET /system_stats
    runsync_ready: float  # /runsync answers a job (a deliberately invalid one: no ComfyUI work)

    @property
    def comfy_part(self) -> float:
        """ComfyUI's own start: child launched → answering."""
        return self.comfy_ready - self.comfy_launched


def measure_boot(poll: float = 0.01, timeout: float = 120) -> Boot:
    """Start the worker and poll, every ``poll`` s, for its child, ComfyUI's HTTP and /runsync."""
    with tempfile.TemporaryDirectory(prefix="wan22-boot-") as tmp:
        env = bench_env(Path(tmp))
        api_port = free_port()
        comfy = f"http://127.0.0.1:{env['COMFY_PORT']}/system_stats"
        runsync = f"http://127.0.0.1:{api_port}/runsync"
        with open(Path(tmp) / "worker.log", "wb") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_port", str(api_port)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        marks: dict[str, float] = {}
        try:
            while "runsync" not in marks:
                now = time.perf_counter() - started
                if now > timeout or proc.poll() is not None:
                    raise SystemExit(f"the worker did not boot (exit {proc.poll()}); see its log")
                if "launched" not in marks and comfy_child(proc.pid) is not None:
                    marks["launched"] = now
                if "launched" in marks and "comfy" not in marks and _answers(lambda: requests.get(comfy, timeout=1)):
                    marks["comfy"] = time.perf_counter() - started
                if "comfy" in marks and _answers(lambda: requests.post(runsync, json={"input": {}}, timeout=5), "FAILED"):
                    marks["runsync"] = time.perf_counter() - started
                time.sleep(poll)
        finally:
            stop_worker_api(proc)
    return Boot(marks["launched"], marks["comfy"], marks["runsync"])


def _answers(call: Any, status: str | None = None) -> bool:
    try:
        resp = call()
    except requests.RequestException:
        return False
    if status is None:
        return resp.status_code == 200
    return resp.status_code == 200 and resp.json().get("status") == status


def print_boots(boots: list[Boot]) -> None:
    print(f"boot, {len(boots)} starts (process start → milestone; polled every 10 ms):")
    rows = {
        "ComfyUI child launched": [b.comfy_launched for b in boots],
        "ComfyUI (double) answering": [b.comfy_ready for b in boots],
        "  of which ComfyUI's own start": [b.comfy_part for b in boots],
        "/runsync answering (first job accepted)": [b.runsync_ready for b in boots],
    }
    for name, values in rows.items():
        p50, _ = p50_p95(values)
        print(f"  {name:42s} p50 {ms(p50)}   max {ms(max(values))}")


# --- 3. Memory over a soak --------------------------------------------------------------------------


@dataclass
class MemorySoak:
    jobs: int
    worker: dict[str, float] = field(default_factory=dict)  # MiB at milestones
    child: dict[str, float] = field(default_factory=dict)


def _rss(proc: psutil.Process) -> float:
    return proc.memory_info().rss / MB


def _high_water_mark(pid: int) -> float | None:
    """The kernel's peak RSS of ``pid`` (VmHWM, Linux), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _PeakSampler(threading.Thread):
    """Samples the RSS of the worker and of its child every ``interval`` s; keeps the maxima."""

    def __init__(self, worker: psutil.Process, child: psutil.Process, interval: float = 0.01):
        super().__init__(daemon=True)
        self.worker, self.child, self.interval = worker, child, interval
        self.peak_worker = self.peak_child = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak_worker = max(self.peak_worker, _rss(self.worker))
                self.peak_child = max(self.peak_child, _rss(self.child))
            except psutil.Error:
                return
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def measure_memory_soak(jobs: int) -> MemorySoak:
    """``jobs`` small jobs in a row; RSS of the worker alone and of its ComfyUI child."""
    soak = MemorySoak(jobs)
    with running_worker() as worker:
        main = psutil.Process(worker.proc.pid)
        child = comfy_child(worker.proc.pid)
        assert child is not None, "the worker has no ComfyUI child"
        image = png_b64(96, 64, (30, 160, 90))
        soak.worker["after boot"], soak.child["after boot"] = _rss(main), _rss(child)
        sampler = _PeakSampler(main, child)
        sampler.start()
        try:
            for job in range(1, jobs + 1):
                job_input = {"prompt": f"soak {job}", "image": image, "options": {"width": 64, "height": 64, "length": 5, "seed": job}}
                _, body, _ = worker.runsync(job_input)
                if body.get("status") != "COMPLETED":
                    raise SystemExit(f"soak job {job} failed: {body.get('error')}")
                if job in (1, 5, jobs):
                    soak.worker[f"after job {job}"], soak.child[f"after job {job}"] = _rss(main), _rss(child)
        finally:
            sampler.stop()
        soak.worker["peak (sampled)"], soak.child["peak (sampled)"] = sampler.peak_worker, sampler.peak_child
        for label, proc in ((soak.worker, main), (soak.child, child)):
            hwm = _high_water_mark(proc.pid)
            if hwm is not None:
                label["peak (VmHWM)"] = hwm
            label[f"growth job 5 → {jobs}"] = label[f"after job {jobs}"] - label["after job 5"]
            label[f"growth boot → {jobs}"] = label[f"after job {jobs}"] - label["after boot"]
    return soak


def print_memory(soak: MemorySoak, big_job_peak: dict[str, float]) -> None:
    print(f"memory, RSS in MiB over {soak.jobs} jobs of 64x64, 5 frames:")
    print(f"  {'':24s} {'worker (no child)':>18s} {'ComfyUI child':>14s}")
    for key in soak.worker:
        print(f"  {key:24s} {soak.worker[key]:18.1f} {soak.child[key]:14.1f}")
    if big_job_peak:
        print(
            "  peak (VmHWM) over the 832x480 overhead run: "
            + ", ".join(f"{who} {value:.1f}" for who, value in big_job_peak.items())
        )


# --- 4. Output path ----------------------------------------------------------------------------------


def base64_output_path(run: OverheadRun) -> dict[str, Any]:
    """What the base64 path costs, from the timings of the overhead run, plus raw codec speed.

    - ``output`` stage: the worker reads the MP4 from ComfyUI (``/view``), checks it, encodes it
      as base64 and checks the response size;
    - delivery: round trip − worker total, i.e. RunPod's API serialising the JSON answer and the
      HTTP transfer to the client (on loopback here; a real client adds its network);
    - the input side: ``prepare`` (base64 of a 1280×720 PNG → bytes → verified image).
    """
    video_b64 = statistics.median(run.video_b64_chars)
    sample = os.urandom(int(video_b64 * 3 / 4))
    encode = _best_of(lambda: base64.b64encode(sample))
    encoded = base64.b64encode(sample)
    decode = _best_of(lambda: base64.b64decode(encoded))
    delivery = [rt - t["total"] for rt, t in zip(run.round_trips, run.timings, strict=True)]
    return {
        "video_mb": video_b64 * 3 / 4 / 1e6,
        "video_b64_mb": video_b64 / 1e6,
        "response_mb": statistics.median(run.response_bytes) / 1e6,
        "output_stage": p50_p95([t["output"] for t in run.timings]),
        "delivery": p50_p95(delivery),
        "prepare_stage": p50_p95([t["prepare"] for t in run.timings]),
        "b64encode_ms_per_mb": encode * 1000 / (len(sample) / 1e6),
        "b64decode_ms_per_mb": decode * 1000 / (len(sample) / 1e6),
    }


def s3_output_path(jobs: int) -> dict[str, Any]:
    """What the S3 path costs: the same 832×480, 81-frame jobs with ``output_mode: "s3"``.

    An S3 API server runs on 127.0.0.1 (moto in server mode, as in the S3 tests); the worker is
    started with the ``BUCKET_*`` variables pointing at it. Reported: the upload + presign stage
    (``timings.s3_upload``), the output stage (reading the MP4), the answer's size, round trip −
    execution, and the client's download of the presigned link (loopback here).
    """
    from tests.s3_server import MotoS3  # moto in server mode, as in the S3 tests

    moto = MotoS3().start()
    try:
        with running_worker(**moto.env(moto.new_bucket())) as worker:
            run = measure_overhead(worker, jobs, extra_input={"output_mode": "s3"})
            downloads = []
            for _ in range(min(jobs, 5)):
                _, body, _ = worker.runsync({"prompt": "a lake", "image": textured_png_b64(1280, 720, 12),
                                             "options": {"width": 832, "height": 480, "length": 81},
                                             "output_mode": "s3"})  # fmt: skip
                started = time.perf_counter()
                requests.get(body["output"]["video_url"], timeout=60).raise_for_status()
                downloads.append(time.perf_counter() - started)
    finally:
        moto.stop()
    series = run.series()
    return {
        "response_kb": statistics.median(run.response_bytes) / 1e3,
        "s3_upload_stage": p50_p95([t["s3_upload"] for t in run.timings]),
        "output_stage": p50_p95([t["output"] for t in run.timings]),
        "overhead": p50_p95(series["overhead: worker total - execution"]),
        "round_trip_minus_execution": p50_p95(series["overhead: round trip - execution"]),
        "client_download": p50_p95(downloads),
    }


def print_s3_path(cost: dict[str, Any]) -> None:
    print(f"output path S3 (moto on 127.0.0.1): response {cost['response_kb']:.1f} KB")
    for name, key in (("upload + presign stage (s3_upload)", "s3_upload_stage"),
                      ("output stage (read MP4)", "output_stage"),
                      ("overhead: worker total - execution", "overhead"),
                      ("overhead: round trip - execution", "round_trip_minus_execution"),
                      ("client downloads the presigned link", "client_download")):  # fmt: skip
        p50, p95 = cost[key]
        print(f"  {name:46s} p50 {ms(p50)}   p95 {ms(p95)}")


def _best_of(call: Any, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def print_base64_path(cost: dict[str, Any]) -> None:
    print(
        f"output path base64: MP4 {cost['video_mb']:.2f} MB → base64 {cost['video_b64_mb']:.2f} MB, "
        f"response {cost['response_mb']:.2f} MB"
    )
    for name, key in (("output stage (read MP4, base64, size check)", "output_stage"),
                      ("delivery (round trip - worker total)", "delivery"),
                      ("input: prepare stage (1280x720 PNG in base64)", "prepare_stage")):  # fmt: skip
        p50, p95 = cost[key]
        print(f"  {name:46s} p50 {ms(p50)}   p95 {ms(p95)}")
    print(f"  raw base64: encode {cost['b64encode_ms_per_mb']:.2f} ms/MB, decode {cost['b64decode_ms_per_mb']:.2f} ms/MB")


# --- Main ----------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}, {platform.system()}, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="measured 832x480x81 jobs for the overhead (plus one warm-up)")
    parser.add_argument("--boots", type=int, default=5, help="worker starts for the boot time")
    parser.add_argument("--soak-jobs", type=int, default=50, help="small jobs for the memory soak")
    parser.add_argument("--output-path", choices=("base64", "s3", "both"), default="both", help="which output paths to cost")
    args = parser.parse_args()

    print(f"python bench/performance.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine()}")
    print("against the ComfyUI test double (no GPU, no model): the worker's own costs only\n")

    with running_worker() as worker:
        run = measure_overhead(worker, args.jobs)
        big_job_peak = {
            who: hwm
            for who, proc in (("worker", psutil.Process(worker.proc.pid)), ("ComfyUI child", comfy_child(worker.proc.pid)))
            if proc is not None and (hwm := _high_water_mark(proc.pid)) is not None
        }
    print("1. overhead per job")
    print_overhead(run)
    print()
    cost = base64_output_path(run)

    boots = [measure_boot() for _ in range(args.boots)]
    print("2. ", end="")
    print_boots(boots)
    print()

    soak = measure_memory_soak(args.soak_jobs)
    print("3. ", end="")
    print_memory(soak, big_job_peak)
    print()

    print("4. ", end="")
    if args.output_path in ("base64", "both"):
        print_base64_path(cost)
    if args.output_path in ("s3", "both"):
        print_s3_path(s3_output_path(args.jobs))

    summary = {
        **run.summary(),
        "boot_to_runsync_p50_s": round(statistics.median(b.runsync_ready for b in boots), 2),
        "comfy_start_p50_s": round(statistics.median(b.comfy_part for b in boots), 2),
        "worker_rss_peak_mib": round(soak.worker.get("peak (VmHWM)", soak.worker["peak (sampled)"]), 1),
        "worker_rss_growth_mib": round(soak.worker[f"growth job 5 → {args.soak_jobs}"], 1),
        "child_rss_growth_mib": round(soak.child[f"growth job 5 → {args.soak_jobs}"], 1),
        "base64_output_stage_p50_ms": round(cost["output_stage"][0] * 1000, 1),
    }
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    main()
