"""Measure the worker's own overhead per job against the ComfyUI test double.

Starts ``python handler.py --rp_serve_api`` exactly as in the end-to-end tests (the worker
launches the double as its ComfyUI child), sends N jobs of 832×480, 81 frames to ``/runsync``
and prints, per job and as p50/p95:

- round trip: HTTP request sent → response received by the client (includes RunPod's local API);
- worker total: the worker's own ``timings.total`` (job received by the handler → response built);
- execution: ComfyUI's (here: the double's) execution time, ``timings.execution``;
- overhead = worker total − execution, and round trip − execution.

With ``--real`` the worker's ComfyUI is the real one of ``REAL_COMFY_DIR``, ``REAL_COMFY_PYTHON`` and
``REAL_VOLUME`` (tests/integration; ``--cpu``, tiny models), and the jobs default to 64×64, 5 frames
from a 96×64 gradient (a 0.5 KB PNG); the first job, which encodes the prompt on the CPU (minutes), is the
warm-up. ``--repo`` starts another checkout's ``handler.py``, to compare versions with one harness.

Usage: python bench/overhead.py [--jobs 20] [--width 832 --height 480 --length 81] [--real] [--repo PATH]
(``bench/performance.py`` runs this together with the boot, memory and output-path figures.)
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO, Worker, ms, p50_p95, real_comfy_env, running_worker, textured_png_b64


@dataclass
class OverheadRun:
    """The timings of N measured jobs (a warm-up job is run first and not counted)."""

    width: int
    height: int
    length: int
    round_trips: list[float] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)
    response_bytes: list[int] = field(default_factory=list)
    video_b64_chars: list[int] = field(default_factory=list)

    def series(self) -> dict[str, list[float]]:
        totals = [t["total"] for t in self.timings]
        executions = [t["execution"] for t in self.timings]
        return {
            "round trip": self.round_trips,
            "worker total": totals,
            "execution (ComfyUI)": executions,
            "overhead: worker total - execution": [t - e for t, e in zip(totals, executions, strict=True)],
            "overhead: round trip - execution": [r - e for r, e in zip(self.round_trips, executions, strict=True)],
        }

    def stage_p50s(self) -> dict[str, float]:
        return {stage: statistics.median(t[stage] for t in self.timings) for stage in self.timings[0]}

    def summary(self) -> dict[str, float]:
        overhead = self.series()["overhead: worker total - execution"]
        p50, p95 = p50_p95(overhead)
        return {"p50_overhead_ms": round(p50 * 1000, 1), "p95_overhead_ms": round(p95 * 1000, 1)}


def measure_overhead(
    worker: Worker,
    jobs: int,
    *,
    width: int = 832,
    height: int = 480,
    length: int = 81,
    noise: int = 12,
    image_size: tuple[int, int] = (1280, 720),
    extra_input: dict | None = None,
    timeout: float = 300,
) -> OverheadRun:
    """Send ``jobs`` + 1 jobs (the first warms up: imports, first encoder run) and collect timings.

    ``extra_input`` is merged into every job's input (e.g. ``{"output_mode": "s3"}``), its
    ``options`` into the job's options (``None`` removes one: ``{"length": None}`` for a task that
    takes none); a value ``"$image"`` there stands for the job's image (``{"end_image": "$image"}``),
    ``"$audio:<seconds>"`` for an MP3 of that many seconds, ``"$video:<seconds>"`` for a 1280×720
    30 fps MP4 of that many seconds.
    """
    image = textured_png_b64(*image_size, noise)
    extra = {key: _placeholder(value, image) for key, value in (extra_input or {}).items()}
    more_options = extra.pop("options", {})
    run = OverheadRun(width, height, length)
    for i in range(jobs + 1):
        options = {"width": width, "height": height, "length": length, "seed": i, **more_options}
        options = {name: value for name, value in options.items() if value is not None}
        job = {"prompt": "a calm lake at dawn", "image": image, "options": options, **extra}
        round_trip, body, size = worker.runsync(job, timeout=timeout)
        if body.get("status") != "COMPLETED":
            raise SystemExit(f"job {i} failed: {body.get('error')}")
        if i:
            out = body["output"]
            run.round_trips.append(round_trip)
            run.timings.append(out["timings"])
            run.response_bytes.append(size)
            run.video_b64_chars.append(len(out.get("video", "")))
    return run


def _placeholder(value: object, image: str) -> object:
    """``"$image"`` → the job's image; ``"$audio:<seconds>"`` / ``"$video:<seconds>"`` → base64 of an
    MP3 / a 1280×720 MP4 of that length; else the value."""
    if value == "$image":
        return image
    if isinstance(value, str) and value.startswith("$video:"):
        from tests.media_files import video_file

        return base64.b64encode(video_file("mp4", float(value.split(":", 1)[1]), 30, (1280, 720))).decode()
    if isinstance(value, str) and value.startswith("$audio:"):
        from tests.media_files import audio_file

        return base64.b64encode(audio_file("mp3", float(value.split(":", 1)[1]), 44_100, 2)).decode()
    return value


def print_overhead(run: OverheadRun) -> None:
    video_mb = statistics.median(run.video_b64_chars) / 1e6
    print(f"{len(run.timings)} jobs of {run.width}x{run.height}, {run.length} frames; video ≈ {video_mb:.2f} MB as base64")
    for name, values in run.series().items():
        p50, p95 = p50_p95(values)
        print(f"  {name:38s} p50 {ms(p50)}   p95 {ms(p95)}")
    print("  stages (p50 ms): " + ", ".join(f"{k} {v * 1000:.0f}" for k, v in run.stage_p50s().items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--length", type=int)
    parser.add_argument("--noise", type=int, help="grain of the input image (bigger → bigger MP4; default 12, 0 with --real)")
    parser.add_argument("--real", action="store_true", help="the real ComfyUI of REAL_COMFY_DIR (CPU) instead of the double")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose handler.py is started")
    args = parser.parse_args()
    width, height, length = (64, 64, 5) if args.real else (832, 480, 81)
    size = {"width": args.width or width, "height": args.height or height, "length": args.length or length}
    image_size = (96, 64) if args.real else (1280, 720)
    env = real_comfy_env() if args.real else {}
    with running_worker(args.repo.resolve(), **env) as worker:
        run = measure_overhead(worker, args.jobs, **size, noise=args.noise if args.noise is not None else 0 if args.real else 12, image_size=image_size, timeout=1200)
    print(f"worker {args.repo.resolve()}, ComfyUI: {'the real one (CPU, tiny models)' if args.real else 'the double'}")
    print_overhead(run)
    print(json.dumps(run.summary()))


if __name__ == "__main__":
    main()
