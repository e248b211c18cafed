"""Shared helpers for tests that run the worker against the ComfyUI double launched as its child."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import av
import psutil
import requests
from PIL import Image

from tests.comfy_double import create_model_files
from tests.comfy_double.inprocess import ALL_MODEL_FILES
from worker.graph import Graph, JobFiles, job_files
from worker.loras import AppliedLora
from worker.pipeline import Runtime
from worker.request.parse import parse_request
from worker.settings import Settings
from worker.tasks import REGISTRY
from worker.tasks.stored import build_graph

REPO = Path(__file__).resolve().parent.parent
DOUBLE_DIR = REPO / "tests" / "comfy_double"


def load_script(name: str, path: Path) -> types.ModuleType:
    """A script of the repository (``scripts/client.py``, ``bench/gpu.py``) imported as module ``name``, once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_volume(root: Path) -> Path:
    """A network volume with every task's model files (tiny stand-ins: the double never reads weights)."""
    volume = root / "runpod-volume"
    create_model_files(volume / "models", ALL_MODEL_FILES)
    return volume


def worker_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Environment that makes the worker launch the double as its ComfyUI."""
    env = {
        "COMFY_DIR": str(DOUBLE_DIR),
        "COMFY_PORT": str(free_port()),
        "VOLUME_PATH": str(make_volume(tmp_path)),
        "WORKER_DIR": str(tmp_path / "work"),
        "COMFY_BOOT_TIMEOUT": "60",
        "COMFY_HTTP_TIMEOUT": "3",
        "JOB_TIMEOUT": "60",
        "PROGRESS_INTERVAL": "0",
    }
    env.update(overrides)
    return env


def process_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The full environment for a worker subprocess: this one's, plus :func:`worker_env`.

    ``RUNPOD_LOG_LEVEL`` is dropped so the worker sets the SDK's level itself, as in production.
    """
    env = {**os.environ, **worker_env(tmp_path, **overrides)}
    env.pop("RUNPOD_LOG_LEVEL", None)
    return env


def settings_for(tmp_path: Path, **overrides: str) -> Settings:
    return Settings.from_env(worker_env(tmp_path, **overrides))


def filled_graph(job_input: dict, settings: Settings | None = None, files: JobFiles | None = None) -> Graph:
    """The graph the pipeline would send to ComfyUI for ``job_input`` (no ComfyUI needed)."""
    settings = settings or Settings()
    request = parse_request(job_input, settings)
    loras = [AppliedLora(lora, lora.name, None) for lora in request.loras if lora.name is not None]  # by name only
    files = files or job_files("job1")
    uploaded = {given.field: files.input_name(given.field, ".png") for given in request.inputs}
    return build_graph(Runtime.create(settings), REGISTRY[request.task], request, files, uploaded, loras)


def by_role(graph: Graph) -> dict[str, dict]:
    """Each node's inputs by its role (``_meta.title``)."""
    return {node["_meta"]["title"]: node["inputs"] for node in graph.prompt.values()}


def set_faults(settings: Settings, *faults: dict) -> None:
    """Arm faults in the launched double through its control API."""
    for fault in faults:
        requests.post(f"{settings.comfy.base_url}/__double__/faults", json=fault, timeout=5).raise_for_status()


def comfy_child_pid(pid: int) -> int:
    """The pid of worker ``pid``'s ComfyUI child (``main.py``; the RunPod SDK also runs a short-lived
    ``cpuinfo.py`` child at import)."""
    children = [c for c in psutil.Process(pid).children() if "main.py" in c.cmdline()]
    assert len(children) == 1, f"expected one ComfyUI child, found {children}"
    return children[0].pid


def process_environ(pid: int) -> dict[str, str]:
    """The environment process ``pid`` started with (``/proc/<pid>/environ``)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item)


def arm_boot_faults(tmp_path: Path, *faults: dict) -> None:
    """Boot faults for the double a worker of :func:`worker_env` launches (it reads them from its user folder)."""
    user = tmp_path / "work" / "user"
    user.mkdir(parents=True, exist_ok=True)
    (user / "comfy_double_faults.json").write_text(json.dumps(list(faults)))


def png_b64(width: int = 96, height: int = 64, color: tuple[int, int, int] = (200, 40, 40)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode_mp4(data: bytes) -> dict:
    """Decode an MP4 completely with PyAV: codec, size, frame count, rate, first frame's mean colour."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return {
            "codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "pix_fmt": stream.codec_context.pix_fmt,
            "frames": len(frames),
            "rate": float(stream.average_rate),
            "first_mean": tuple(int(c) for c in frames[0].reshape(-1, 3).mean(axis=0)),
            "last_mean": tuple(int(c) for c in frames[-1].reshape(-1, 3).mean(axis=0)),
            "metadata": dict(container.metadata),
        }


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def start_worker_api(
    env: dict[str, str], api_port: int, output: IO[bytes] | int = subprocess.DEVNULL, *, repo: Path = REPO
) -> subprocess.Popen:
    """``python handler.py --rp_serve_api`` (of checkout ``repo``) as RunPod's local API, answering once ready."""
    proc = subprocess.Popen(
        [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_port", str(api_port)],
        cwd=repo, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{api_port}/docs", timeout=120)
    except TimeoutError:
        stop_worker_api(proc)
        raise
    return proc


def stop_worker_api(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, as RunPod stops a worker; SIGKILL the group if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class WorkerAPI:
    """A running ``python handler.py --rp_serve_api`` and the ComfyUI double it launched."""

    def __init__(self, env: dict[str, str], api_port: int, log: Path, proc: subprocess.Popen):
        self.env, self.api_port, self.log, self.proc = env, api_port, log, proc

    def runsync(self, job_input: object, timeout: float = 120) -> dict:
        resp = requests.post(f"http://127.0.0.1:{self.api_port}/runsync", json={"input": job_input}, timeout=timeout)
        assert resp.status_code == 200, resp.text[:500]
        return resp.json()

    def fault(self, fault: dict) -> None:
        url = f"http://127.0.0.1:{self.env['COMFY_PORT']}/__double__/faults"
        requests.post(url, json=fault, timeout=5).raise_for_status()


@contextlib.contextmanager
def running_worker(tmp: Path, **overrides: str) -> Iterator[WorkerAPI]:
    """The worker's local API in a subprocess for the duration of the block; its log in ``tmp/worker.log``."""
    env = process_env(tmp, **overrides)
    api_port = free_port()
    log = tmp / "worker.log"
    with open(log, "wb") as out:
        proc = start_worker_api(env, api_port, out)
    try:
        yield WorkerAPI(env, api_port, log, proc)
    finally:
        stop_worker_api(proc)
