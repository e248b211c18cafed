"""Boot figures: process start → ComfyUI launched → local API answering → ComfyUI answering → first
job done, and where the first (cold) and the second (warm) job spent their time.

Starts ``python handler.py --rp_serve_api`` (from this checkout, or another one with ``--repo``,
to compare versions) N times and prints each milestone's p50 and max, in seconds from the
worker's process start:

- ComfyUI launched: the ComfyUI child's own start time (psutil ``create_time``), so the figure is
  not limited by polling;
- local API answering: RunPod's local API answers ``GET /docs`` (the SDK is imported and its job
  loop runs);
- ComfyUI answering: ``GET /system_stats`` answers;
- first job done: a 64×64, 5-frame job sent as soon as the API answers has its answer.

Then a second job (another seed) follows the first, and a second table gives both jobs' stages from
their answers' ``timings`` (``boot_wait``, ``queue_wait``, ``loading``, ``first_step``, ``execution``,
``total``) and the client's round trip, p50 over the boots, for each ``--prefetch`` setting
(``PREFETCH_MODELS`` off, on, or both one after the other).

Before every boot the page cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``), so the
first job reads ComfyUI and the models from the disk as a new worker does; where that is not
permitted (not root, a container without it) the model files of the volume alone are dropped
(``posix_fadvise DONTNEED``), and the output says which. ``--keep-cache`` drops nothing.

By default the ComfyUI is the test double (as in the tests). With ``--real`` it is the real
ComfyUI given by ``REAL_COMFY_DIR``, ``REAL_COMFY_PYTHON``, ``REAL_VOLUME`` (see
tests/integration), run with ``--cpu``.

Usage: python bench/boot.py [--boots 5] [--repo PATH] [--real] [--prefetch off|on|both] [--keep-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
from common import REPO, comfy_child, p50_p95, real_comfy_env

from tests.harness import free_port, png_b64, process_env, stop_worker_api

JOB = {"prompt": "a red ball rolls across a wooden table", "image": png_b64(96, 64),
       "options": {"width": 64, "height": 64, "length": 5, "seed": 1}}  # fmt: skip
MILESTONES = {"launched": "ComfyUI launched", "api": "local API answering", "comfy": "ComfyUI answering", "job": "first job done"}
#: The answer's stages the table shows, in the job's order, and the client's round trip.
STAGES = ("boot_wait", "queue_wait", "loading", "first_step", "execution", "total", "round_trip")


def drop_page_cache(volume: Path | None) -> str:
    """Drop the page cache (all of it, else the volume's model files); say what was dropped."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "the whole page cache (drop_caches)"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    if volume is None:
        return f"nothing: drop_caches is not permitted here ({reason})"
    count = 0
    for path in (volume / "models").rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            count += 1
    return f"the volume's {count} model files only (posix_fadvise): drop_caches is not permitted here ({reason})"


def boot_once(repo: Path, real: bool, prefetch: bool, timeout: float = 1200) -> dict:
    """One boot: its milestones (seconds from the process start) and its two jobs' stages."""
    with tempfile.TemporaryDirectory(prefix="wan22-boot-") as tmp:
        overrides = {"LOG_LEVEL": "WARNING", "PREFETCH_MODELS": "true" if prefetch else "false"}
        if real:
            overrides |= real_comfy_env()
        env = process_env(Path(tmp), **overrides)
        api_port = free_port()
        api, comfy = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{env['COMFY_PORT']}"
        with open(Path(tmp) / "worker.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_port", str(api_port)],
                cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        started = psutil.Process(proc.pid).create_time()
        marks: dict[str, float] = {}
        try:
            while "api" not in marks or "comfy" not in marks:
                if time.time() - started > timeout or proc.poll() is not None:
                    raise SystemExit(f"the worker did not boot (exit {proc.poll()}); log: {Path(tmp) / 'worker.log'}")
                child = comfy_child(proc.pid)
                if child is not None and "launched" not in marks:
                    marks["launched"] = child.create_time() - started
                if "api" not in marks and _ok(f"{api}/docs"):
                    marks["api"] = time.time() - started
                    job = _Job(f"{api}/runsync", JOB)
                if "comfy" not in marks and _ok(f"{comfy}/system_stats"):
                    marks["comfy"] = time.time() - started
                time.sleep(0.01)
            job.join()
            marks["job"] = job.done_at - started
            second = _Job(f"{api}/runsync", {**JOB, "options": {**JOB["options"], "seed": 2}})
            second.join()
        finally:
            stop_worker_api(proc)
    return {"marks": marks, "cold": job.stages(), "warm": second.stages()}


class _Job:
    """One job, sent in a thread; its answer, when it came, and how long the client waited."""

    def __init__(self, url: str, job: dict):
        self.answer: dict = {}
        self.sent_at = self.done_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(url, job), daemon=True)
        self._thread.start()

    def _run(self, url: str, job: dict) -> None:
        self.sent_at = time.time()
        self.answer = requests.post(url, json={"input": job}, timeout=1800).json()
        self.done_at = time.time()

    def join(self) -> None:
        self._thread.join()
        if self.answer.get("status") != "COMPLETED":
            raise SystemExit(f"a job failed: {self.answer}")

    def stages(self) -> dict[str, float]:
        return {**self.answer["output"]["timings"], "round_trip": round(self.done_at - self.sent_at, 3)}


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def print_stages(runs: dict[str, list[dict]]) -> None:
    """The cold and the warm job's stages (p50 over the boots) for each prefetch setting."""
    print("| PREFETCH_MODELS | job | " + " | ".join(STAGES) + " |")
    print("|---|---|" + "---|" * len(STAGES))
    for setting, boots in runs.items():
        for job in ("cold", "warm"):
            cells = []
            for stage in STAGES:
                values = [boot[job][stage] for boot in boots if stage in boot[job]]
                cells.append(f"{p50_p95(values)[0]:.3f}" if values else "–")
            print(f"| {setting} | {'first (cold)' if job == 'cold' else 'second (warm)'} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose handler.py is started")
    parser.add_argument("--real", action="store_true", help="the real ComfyUI of REAL_COMFY_DIR instead of the double")
    parser.add_argument("--prefetch", choices=("off", "on", "both"), default="off", help="PREFETCH_MODELS for the boots")
    parser.add_argument("--keep-cache", action="store_true", help="do not drop the page cache before each boot")
    args = parser.parse_args()
    volume = Path(os.environ["REAL_VOLUME"]) if args.real else None
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.prefetch]
    runs: dict[str, list[dict]] = {}
    dropped = "nothing (--keep-cache)"
    for prefetch in settings:
        boots = runs.setdefault("true" if prefetch else "false", [])
        for _ in range(args.boots):
            if not args.keep_cache:
                dropped = drop_page_cache(volume)
            boots.append(boot_once(args.repo.resolve(), args.real, prefetch))
    every = [boot for boots in runs.values() for boot in boots]
    print(f"boot of {args.repo.resolve()} with {'the real ComfyUI (CPU)' if args.real else 'the double'}, "
          f"{args.boots} starts per setting; page cache dropped before each: {dropped}")  # fmt: skip
    print("seconds from process start:\n| milestone | p50 | max |\n|---|---|---|")
    summary = {}
    for key, name in MILESTONES.items():
        values = [boot["marks"][key] for boot in every]
        p50 = p50_p95(values)[0]
        summary[key] = round(p50, 2)
        print(f"| {name} | {p50:.2f} | {max(values):.2f} |")
    print("\nthe first job (sent as the API answers) and the second, seconds from their answers' timings (p50):")
    print_stages(runs)
    print(json.dumps({"milestones": summary, "stages": {k: [{j: b[j] for j in ("cold", "warm")} for b in v] for k, v in runs.items()}}))


if __name__ == "__main__":
    main()
