"""The worker's overhead per task against the ComfyUI test double.

One worker (``python handler.py --rp_serve_api`` with the double as its ComfyUI, as in the tests)
runs N jobs of each task at 832×480, 81 frames from a 1280×720 image, and prints the overhead
(``timings.total − timings.execution``: everything the worker does that is not ComfyUI's run) as
p50/p95 per task, and for jobs with two LoRAs by name and with a LoRA by URL (served on
127.0.0.1; the first job fetches it, the measured ones find it in the cache), with an MP3 track,
and for s2v of one, two and three segments (832×480, the length following the speech), control and
animate from a 1280×720 video (its length following the video; canny and pose, a given pose video
and one drawn from the video). The per-job figures
on the real ComfyUI come from tests/integration (see docs/performance.md).

``--repo PATH`` starts another checkout's ``handler.py`` (the same harness), to compare versions.

Usage: python bench/tasks.py [--jobs 20] [--repo PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import REPO, p50_p95, running_worker
from overhead import measure_overhead

from tests.comfy_double.inprocess import safetensors_stand_in
from tests.file_server import FileServer

LORA_NAMES = ("bench/style_high.safetensors", "bench/style_low.safetensors")

#: Each task's fields on top of the job's prompt, image and options (null: "not given").
TASKS: dict[str, dict] = {
    "i2v": {},
    "i2v + last frame": {"return_last_frame": True},
    "flf2v": {"task": "flf2v", "end_image": "$image"},
    "t2v": {"task": "t2v", "image": None},
    "ti2v-5b": {"task": "ti2v-5b"},
    "i2v speed 4step": {"speed": "4step"},
    "i2v + interpolate 2": {"options": {"interpolate": 2}},
    "i2v + 2 LoRAs by name": {"loras": [{"name": LORA_NAMES[0], "target": "high"}, {"name": LORA_NAMES[1], "target": "low"}]},
    "i2v + a 5 s MP3": {"audio": "$audio:5"},
    "s2v, 1 segment (4 s of speech)": {"task": "s2v", "audio": "$audio:4", "options": {"length": None}},
    "s2v, 2 segments (9 s)": {"task": "s2v", "audio": "$audio:9", "options": {"length": None}},
    "s2v, 3 segments (14 s)": {"task": "s2v", "audio": "$audio:14", "options": {"length": None}},
    "control canny (a 5 s 720p video)": {"task": "control", "video": "$video:5", "options": {"length": None}},
    "animate move, 2 segments (a 6 s 720p pose video)": {"task": "animate", "pose_video": "$video:6", "options": {"length": None}},
    "animate move, pose drawn (a 6 s 720p video)": {"task": "animate", "video": "$video:6", "options": {"length": None}},
    "animate replace, pose and mask drawn (a 6 s 720p video)": {"task": "animate", "video": "$video:6", "options": {"length": None, "mode": "replace"}},
    "control pose (a 5 s 720p video)": {"task": "control", "video": "$video:5", "options": {"length": None, "control": "pose"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose handler.py is started")
    args = parser.parse_args()
    results = {}
    server = FileServer({"/style.safetensors": safetensors_stand_in("loras/bench/by_url.safetensors")})
    jobs = {**TASKS, "i2v + a LoRA by URL (cached)": {"loras": [{"url": f"{server.url}/style.safetensors"}]}}
    with server, running_worker(args.repo.resolve(), ALLOW_PRIVATE_LORA_URLS="true") as worker:
        loras = Path(worker.env["VOLUME_PATH"]) / "models" / "loras"
        for name in LORA_NAMES:
            (loras / name).parent.mkdir(parents=True, exist_ok=True)
            (loras / name).write_bytes(safetensors_stand_in(f"loras/{name}"))
        for name, fields in jobs.items():
            run = measure_overhead(worker, args.jobs, extra_input=fields)
            overhead = run.series()["overhead: worker total - execution"]
            results[name] = [round(v * 1000, 1) for v in p50_p95(overhead)]
    print(f"worker overhead per task of {args.repo.resolve()}, {args.jobs} jobs each of 832x480, 81 frames (double as ComfyUI):")
    print("| task | p50 ms | p95 ms |\n|---|---|---|")
    for name, (p50, p95) in results.items():
        print(f"| {name} | {p50} | {p95} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
