"""Measure the worker's own overhead per job against the ComfyUI test double.

Starts ``python handler.py --rp_serve_api`` exactly as in the end-to-end tests (the worker
launches the double as its ComfyUI child), sends N jobs of 832×480, 81 frames to ``/runsync``
and prints, per job and as p50/p95:

- round trip: HTTP request sent → response received by the client (includes RunPod's local API);
- worker total: the worker's own ``timings.total`` (job received by the handler → response built);
- execution: ComfyUI's (here: the double's) execution time, ``timings.execution``;
- overhead = worker total − execution, and round trip − execution.

Usage: python bench/overhead.py [--jobs 20] [--width 832 --height 480 --length 81]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import free_port, start_worker_api, stop_worker_api, worker_env  # noqa: E402


def textured_png_b64(width: int, height: int, noise: int) -> str:
    """A gradient with grain, so the MP4 has a realistic size (a flat image encodes to a few KB)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64], axis=-1)
    pixels = np.clip(base + rng.integers(-noise, noise + 1, base.shape), 0, 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--length", type=int, default=81)
    parser.add_argument("--noise", type=int, default=12, help="grain of the input image (bigger → bigger MP4)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **worker_env(Path(tmp), LOG_LEVEL="WARNING")}
        port = free_port()
        proc = start_worker_api(env, port)
        try:
            image = textured_png_b64(1280, 720, args.noise)
            rows = []
            stages: list[dict[str, float]] = []
            for i in range(args.jobs + 1):  # job 0 warms up (imports, first encoder run)
                job = {"prompt": "a calm lake at dawn", "image": image,
                       "options": {"width": args.width, "height": args.height, "length": args.length, "seed": i}}  # fmt: skip
                started = time.perf_counter()
                resp = requests.post(f"http://127.0.0.1:{port}/runsync", json={"input": job}, timeout=300)
                round_trip = time.perf_counter() - started
                body = resp.json()
                if body.get("status") != "COMPLETED":
                    raise SystemExit(f"job {i} failed: {body.get('error')}")
                t = body["output"]["timings"]
                if i:
                    rows.append((round_trip, t["total"], t["execution"], len(body["output"]["video"])))
                    stages.append(t)
        finally:
            stop_worker_api(proc)

    rt = [r[0] for r in rows]
    total = [r[1] for r in rows]
    exe = [r[2] for r in rows]
    over_worker = [r[1] - r[2] for r in rows]
    over_rt = [r[0] - r[2] for r in rows]
    print(f"{args.jobs} jobs of {args.width}x{args.height}, {args.length} frames; video ≈ {rows[0][3] / 1e6:.2f} MB as base64")
    for name, values in (("round trip", rt), ("worker total", total), ("execution (double)", exe),
                         ("overhead: worker total - execution", over_worker),
                         ("overhead: round trip - execution", over_rt)):  # fmt: skip
        print(f"  {name:38s} p50 {statistics.median(values) * 1000:8.1f} ms   p95 {percentile(values, 95) * 1000:8.1f} ms")
    print("  stages (p50 ms): " + ", ".join(f"{k} {statistics.median(t[k] for t in stages) * 1000:.0f}" for k in stages[0]))
    print(json.dumps({"p50_overhead_ms": round(statistics.median(over_worker) * 1000, 1),
                      "p95_overhead_ms": round(percentile(over_worker, 95) * 1000, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
