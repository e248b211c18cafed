"""Boot figures: process start → ComfyUI launched → local API answering → ComfyUI answering → first job done.

Starts ``python handler.py --rp_serve_api`` (from this checkout, or another one with ``--repo``,
to compare versions) N times and prints each milestone's p50 and max, in seconds from the
worker's process start:

- ComfyUI launched: the ComfyUI child's own start time (psutil ``create_time``), so the figure is
  not limited by polling;
- local API answering: RunPod's local API answers ``GET /docs`` (the SDK is imported and its job
  loop runs);
- ComfyUI answering: ``GET /system_stats`` answers;
- first job done: a 64×64, 5-frame job sent as soon as the API answers has its answer.

By default the ComfyUI is the test double (as in the tests). With ``--real`` it is the real
ComfyUI given by ``REAL_COMFY_DIR``, ``REAL_COMFY_PYTHON``, ``REAL_VOLUME`` (see
tests/integration), run with ``--cpu``.

Usage: python bench/boot.py [--boots 5] [--repo PATH] [--real]
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
from common import REPO, comfy_child, p50_p95

from tests.harness import free_port, png_b64, process_env, stop_worker_api

JOB = {"prompt": "a red ball rolls across a wooden table", "image": png_b64(96, 64),
       "options": {"width": 64, "height": 64, "length": 5, "seed": 1}}  # fmt: skip


def boot_once(repo: Path, real: bool, timeout: float = 600) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="wan22-boot-") as tmp:
        overrides = {"LOG_LEVEL": "WARNING"}
        if real:
            overrides |= {"COMFY_DIR": os.environ["REAL_COMFY_DIR"], "COMFY_PYTHON": os.environ["REAL_COMFY_PYTHON"],
                          "VOLUME_PATH": os.environ["REAL_VOLUME"], "COMFY_EXTRA_ARGS": "--cpu", "JOB_TIMEOUT": "900"}  # fmt: skip
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
                    job = _Job(f"{api}/runsync")
                if "comfy" not in marks and _ok(f"{comfy}/system_stats"):
                    marks["comfy"] = time.time() - started
                time.sleep(0.01)
            job.join()
            if job.answer.get("status") != "COMPLETED":
                raise SystemExit(f"the first job failed: {job.answer}")
            marks["job"] = job.done_at - started
        finally:
            stop_worker_api(proc)
    return marks


class _Job:
    """The first job, sent in a thread as soon as the API answers; its answer and when it came."""

    def __init__(self, url: str):
        self.answer: dict = {}
        self.done_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        self.answer = requests.post(url, json={"input": JOB}, timeout=1200).json()
        self.done_at = time.time()

    def join(self) -> None:
        self._thread.join()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose handler.py is started")
    parser.add_argument("--real", action="store_true", help="the real ComfyUI of REAL_COMFY_DIR instead of the double")
    args = parser.parse_args()
    boots = [boot_once(args.repo.resolve(), args.real) for _ in range(args.boots)]
    names = {"launched": "ComfyUI launched", "api": "local API answering", "comfy": "ComfyUI answering",
             "job": "first job done"}  # fmt: skip
    print(f"boot of {args.repo.resolve()} with {'the real ComfyUI (CPU)' if args.real else 'the double'}, "
          f"{len(boots)} starts, seconds from process start:")  # fmt: skip
    print("| milestone | p50 | max |\n|---|---|---|")
    summary = {}
    for key, name in names.items():
        values = [b[key] for b in boots]
        p50 = p50_p95(values)[0]
        summary[key] = round(p50, 2)
        print(f"| {name} | {p50:.2f} | {max(values):.2f} |")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
