"""Soak: 50 small jobs in a row through ``python handler.py --rp_serve_api`` against the double.

Every job must come back COMPLETED with an MP4 of the requested size and length, the worker's
input/output folders must be empty afterwards, and the worker process must not grow: its thread
count, open file descriptors and sockets are measured after job 5 (everything lazily created by
a first job exists by then: the handler's executor thread, the keep-alive connection to ComfyUI,
the websocket code path) and after job 50.

Tolerances (growth from job 5 to job 50): threads +2, file descriptors +3, sockets +2. A leak of
one thread, descriptor or socket per job would show as +45; a leak of one per ten jobs as +4 or
+5. What the tolerance absorbs are one-off, bounded things that may appear late: a second
executor thread when RunPod's loop happens to submit while the first is still winding down, a
second pooled keep-alive connection to ComfyUI, an accepted API connection that the client has
closed but the server has not reaped yet (each one descriptor and one socket).

ComfyUI's side is checked too: the double must not see more websocket clients at job 50 than at
job 5 (a worker that forgot to close its socket per job would pile them up there).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import psutil
import requests

from tests.harness import decode_mp4, files_in, free_port, png_b64, process_env, start_worker_api, stop_worker_api

JOBS = 50
FIRST_SAMPLE = 5
THREAD_TOLERANCE = 2
FD_TOLERANCE = 3
SOCKET_TOLERANCE = 2
#: RSS is reported, and only a gross leak fails: 50 jobs of 64×64×5 move ~1 MB of base64 in total.
RSS_TOLERANCE_MB = 48


def _sample(proc: psutil.Process, comfy_url: str) -> dict[str, int]:
    state = requests.get(f"{comfy_url}/__double__/state", timeout=5).json()
    return {
        "threads": proc.num_threads(),
        "fds": proc.num_fds(),
        "sockets": len(proc.net_connections("all")),
        "rss_mb": proc.memory_info().rss // 2**20,
        "comfy_ws_clients": len(state["connected_clients"]),
    }


def test_fifty_small_jobs_leave_no_files_threads_or_sockets_behind(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    api_port = free_port()
    comfy_url = f"http://127.0.0.1:{env['COMFY_PORT']}"
    with open(tmp_path / "worker.log", "wb") as out:
        proc = start_worker_api(env, api_port, out)
    try:
        worker = psutil.Process(proc.pid)
        image = png_b64(96, 64, (30, 160, 90))
        samples: dict[int, dict[str, int]] = {}
        started = time.monotonic()
        for job in range(1, JOBS + 1):
            job_input = {"prompt": f"soak job {job}", "image": image, "options": {"width": 64, "height": 64, "length": 5, "seed": job}}
            resp = requests.post(f"http://127.0.0.1:{api_port}/runsync", json={"input": job_input}, timeout=60)
            body = resp.json()
            assert resp.status_code == 200 and body["status"] == "COMPLETED", f"job {job}: {body.get('error', body)}"
            video = decode_mp4(base64.b64decode(body["output"]["video"]))
            assert (video["width"], video["height"], video["frames"], video["rate"]) == (64, 64, 5, 24.0), f"job {job}: {video}"
            assert body["output"]["seed"] == job
            if job in (FIRST_SAMPLE, JOBS):
                samples[job] = _sample(worker, comfy_url)
        elapsed = time.monotonic() - started
        assert proc.poll() is None

        work = Path(env["WORKER_DIR"])
        assert files_in(work / "input") == [], "input images left behind"
        assert files_in(work / "output") == [], "videos left behind"

        first, last = samples[FIRST_SAMPLE], samples[JOBS]
        print(f"\nsoak: {JOBS} jobs in {elapsed:.1f} s; after job {FIRST_SAMPLE}: {first}; after job {JOBS}: {last}")
        assert last["threads"] - first["threads"] <= THREAD_TOLERANCE, (first, last)
        assert last["fds"] - first["fds"] <= FD_TOLERANCE, (first, last)
        assert last["sockets"] - first["sockets"] <= SOCKET_TOLERANCE, (first, last)
        assert last["comfy_ws_clients"] <= first["comfy_ws_clients"], (first, last)
        assert last["rss_mb"] - first["rss_mb"] <= RSS_TOLERANCE_MB, (first, last)
    finally:
        stop_worker_api(proc)
