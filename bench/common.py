"""What the benchmark scripts share: the worker under test, test images, percentiles, /runsync.

The worker is started exactly as in the end-to-end tests: ``python handler.py --rp_serve_api``
in a throwaway folder, with the ComfyUI test double as its ComfyUI child (``tests/harness.py``).
"""

from __future__ import annotations

import base64
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness import free_port, process_env, start_worker_api, stop_worker_api  # noqa: E402


def textured_png_b64(width: int, height: int, noise: int) -> str:
    """A gradient with grain, so the MP4 has a realistic size (a flat image encodes to a few KB)."""
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
    """The nearest-rank percentile (no interpolation: every figure is a measured value)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def p50_p95(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), percentile(values, 95)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def comfy_child(pid: int) -> psutil.Process | None:
    """The ComfyUI child (``main.py``) of the worker ``pid``, or None while there is none.

    Not just "the child": at import the RunPod SDK briefly runs ``cpuinfo.py --json`` as one.
    """
    for child in psutil.Process(pid).children():
        try:
            if "main.py" in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


@dataclass
class Worker:
    """A running ``handler.py --rp_serve_api`` (``proc``) and the ports of its API and ComfyUI."""

    proc: Any
    api_port: int
    env: dict[str, str]
    folder: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def comfy_url(self) -> str:
        return f"http://127.0.0.1:{self.env['COMFY_PORT']}"

    def runsync(self, job_input: Any, timeout: float = 300) -> tuple[float, dict[str, Any], int]:
        """POST one job; returns (round trip in s, the answer, the answer's size in bytes)."""
        started = time.perf_counter()
        resp = requests.post(f"{self.api_url}/runsync", json={"input": job_input}, timeout=timeout)
        round_trip = time.perf_counter() - started
        return round_trip, resp.json(), len(resp.content)


def bench_env(folder: Path, **overrides: str) -> dict[str, str]:
    """The worker's environment for a benchmark: the test harness's, quieter, payload-safe."""
    return process_env(folder, **{"LOG_LEVEL": "WARNING", **overrides})


def real_comfy_env() -> dict[str, str]:
    """The worker's variables for the real ComfyUI of ``REAL_COMFY_DIR``, ``REAL_COMFY_PYTHON`` and
    ``REAL_VOLUME`` (tests/integration), run on the CPU."""
    missing = [name for name in ("REAL_COMFY_DIR", "REAL_COMFY_PYTHON", "REAL_VOLUME") if not os.environ.get(name)]
    if missing:
        raise SystemExit(f"--real needs {', '.join(missing)} (see docs/development.md, the real ComfyUI)")
    return {"COMFY_DIR": os.environ["REAL_COMFY_DIR"], "COMFY_PYTHON": os.environ["REAL_COMFY_PYTHON"],
            "VOLUME_PATH": os.environ["REAL_VOLUME"], "COMFY_EXTRA_ARGS": "--cpu", "COMFY_BOOT_TIMEOUT": "300",
            "COMFY_HTTP_TIMEOUT": "30", "JOB_TIMEOUT": "900"}  # fmt: skip


@contextmanager
def running_worker(repo: Path = REPO, **overrides: str) -> Iterator[Worker]:
    """Start the worker of checkout ``repo`` (returns once its API answers) and stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="wan22-bench-") as tmp:
        env = bench_env(Path(tmp), **overrides)
        port = free_port()
        with open(Path(tmp) / "worker.log", "wb") as out:
            proc = start_worker_api(env, port, out, repo=repo)
        try:
            yield Worker(proc, port, env, Path(tmp))
        finally:
            stop_worker_api(proc)
