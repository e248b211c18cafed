"""The real ComfyUI as a recording session: start it on the CPU, upload files, run graphs, probe outputs.

Used by ``record_media.py``; not a test, and nothing in CI imports it. The server is started the way
``../shared/comfyui/README.md`` describes (``--cpu``, ``--disable-auto-launch``, ``--preview-method
none``, an in-memory database) with throwaway input, output, temp and user folders under ``work``,
and an ``extra_model_paths.yaml`` that points every model folder at the test volume.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import av
import requests
import websocket

#: The volume's model folders ComfyUI is told about (``models/<name>``).
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "audio_encoders", "clip_vision",
                 "frame_interpolation", "checkpoints")  # fmt: skip


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    """One ``POST /prompt`` and what followed: the answer, every websocket message, the history entry."""

    graph: dict
    status: int
    response: dict | str
    content_type: str = ""
    prompt_id: str = ""
    ws: list[dict] = field(default_factory=list)
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    log: str = ""

    @property
    def ok(self) -> bool:
        entry = self.history.get(self.prompt_id, {})
        return self.status == 200 and entry.get("status", {}).get("status_str") == "success"

    def error(self) -> dict | None:
        """The ``execution_error`` message's data, if the run failed with one."""
        for item in self.ws:
            if item.get("msg", {}).get("type") == "execution_error":
                return item["msg"]["data"]
        return None

    def outputs(self) -> dict:
        return self.history.get(self.prompt_id, {}).get("outputs", {})


class Server:
    """One real ComfyUI process. Use as a context manager; ``stop()`` ends only the process it started."""

    def __init__(self, comfy_dir: Path, python: Path, volume: Path, work: Path,
                 extra_models: dict[str, Path] | None = None, env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.comfy_dir, self.python, self.volume, self.work = comfy_dir.resolve(), python, volume.resolve(), work.resolve()
        self.extra_models = extra_models or {}
        self.env = env or {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.dirs = {name: self.work / name for name in ("input", "output", "temp", "user")}
        self.log_path = self.work / "server.log"

    # --- lifecycle ---------------------------------------------------------------------------
    def write_yaml(self) -> Path:
        lines = ["volume:", f"  base_path: {self.volume / 'models'}"]
        lines += [f"  {folder}: {folder}" for folder in MODEL_FOLDERS]
        if self.extra_models:
            lines.append("recording_fixtures:")
            lines += [f"  {folder}: {path}" for folder, path in self.extra_models.items()]
        path = self.work / "extra_model_paths.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 300) -> Server:
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--preview-method", "none", "--extra-model-paths-config", str(self.write_yaml()),
               "--database-url", "sqlite:///:memory:"]  # fmt: skip
        for name, folder in self.dirs.items():
            cmd += [f"--{name}-directory", str(folder)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.base}/system_stats", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log_file.close()
        self.proc = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- HTTP ------------------------------------------------------------------------------------
    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return self.clean(f.read().decode("utf-8", "replace"))

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=60)

    def object_info(self, classes: list[str]) -> dict:
        info = {}
        for name in classes:
            answer = self.get(f"/object_info/{requests.utils.quote(name)}")
            info[name] = answer.json().get(name) if answer.ok else {"http_status": answer.status_code}
        return info

    def upload(self, name: str, data: bytes, subfolder: str = "") -> dict:
        answer = requests.post(f"{self.base}/upload/image", files={"image": (name, data)},
                               data={"subfolder": subfolder, "type": "input", "overwrite": "true"}, timeout=60)  # fmt: skip
        body: dict | str
        try:
            body = answer.json()
        except ValueError:
            body = answer.text
        return {"status": answer.status_code, "content_type": answer.headers.get("Content-Type"), "body": body}

    def run(self, graph: dict, timeout: float = 1200) -> Run:
        """Queue ``graph`` with the websocket open first; collect every message to ``executing node=None``."""
        client_id = f"recorder-{uuid.uuid4().hex[:8]}"
        prompt_id = str(uuid.uuid4())
        log_start = self.log_size()
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            started = time.monotonic()
            status, body, content_type = self.queue(graph, client_id, prompt_id)
            run = Run(graph=graph, status=status, response=body, content_type=content_type)
            if status != 200:
                run.log = self.log_since(log_start)
                return run
            run.prompt_id = prompt_id
            while True:
                frame = ws.recv()
                offset = round(time.monotonic() - started, 3)
                if isinstance(frame, bytes):
                    run.ws.append({"t": offset, "kind": "binary", "bytes": len(frame)})
                    continue
                msg = json.loads(frame)
                run.ws.append({"t": offset, "kind": "text", "msg": msg})
                data = msg.get("data", {})
                if msg.get("type") == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
            run.seconds = round(time.monotonic() - started, 3)
        finally:
            ws.close()
        run.history = self.get(f"/history/{prompt_id}").json()
        time.sleep(0.3)  # let the last log lines reach the file
        run.log = self.log_since(log_start)
        return run

    def queue(self, graph: dict, client_id: str = "recorder", prompt_id: str = "") -> tuple[int, dict | str, str]:
        """``POST /prompt`` only: (HTTP status, body, content type)."""
        payload = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id or str(uuid.uuid4())}
        answer = requests.post(f"{self.base}/prompt", json=payload, timeout=120)
        try:
            body = answer.json()
        except ValueError:
            body = answer.text
        return answer.status_code, body, answer.headers.get("Content-Type", "")

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.base + path, json=body, timeout=60)

    def output_file(self, item: dict) -> Path:
        root = self.dirs["temp"] if item.get("type") == "temp" else self.dirs["output"]
        return root / item.get("subfolder", "") / item["filename"]

    def clean(self, text: str) -> str:
        """Drop terminal colour codes; replace this machine's paths with ``/comfyui``, ``<venv>``, ``<volume>``, ``<work>``."""
        text = ANSI.sub("", text)
        venv = str(Path(self.python).absolute().parent.parent)
        return (text.replace(str(self.comfy_dir), "/comfyui").replace(venv, "<venv>").replace(str(self.volume), "<volume>")
                .replace(str(self.work), "<work>"))  # fmt: skip


def probe(path: Path, frame_stats: bool = False) -> dict:
    """PyAV's view of a media file: container, and for each stream its codec and decoded length."""
    if not path.is_file():
        return {"file": path.name, "exists": False}
    out: dict = {"file": path.name, "bytes": path.stat().st_size, "tool": f"PyAV {av.__version__}"}
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        return {**out, "open_error": f"{type(err).__name__}: {err}"}
    with container:
        out["container"] = container.format.name
        out["duration_s"] = None if container.duration is None else round(container.duration / 1_000_000, 4)
        kinds = [kind for kind in ("video", "audio") if getattr(container.streams, kind)]
    for kind in kinds:  # each stream decoded from its own opening of the file
        with av.open(str(path)) as container:
            out[kind] = _video(container, frame_stats) if kind == "video" else _audio(container)
    return out


def _video(container: av.container.InputContainer, frame_stats: bool) -> dict:
    stream = container.streams.video[0]
    info = {"codec": stream.codec_context.name, "width": stream.codec_context.width, "height": stream.codec_context.height,
            "pix_fmt": stream.codec_context.pix_fmt, "average_rate": str(stream.average_rate),
            "stream_frames": stream.frames,
            "duration_s": None if stream.duration is None else round(float(stream.duration * stream.time_base), 4)}  # fmt: skip
    luma, rgb, count = [], [], 0
    for frame in container.decode(stream):
        count += 1
        if frame_stats:
            luma.append(round(float(frame.to_ndarray(format="gray").mean()), 2))
            rgb.append([round(float(c), 2) for c in frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)])
    info["decoded_frames"] = count
    if frame_stats:
        info["frame_mean_luma"], info["frame_mean_rgb"] = luma, rgb
    return info


def _audio(container: av.container.InputContainer) -> dict:
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    info = {"codec": ctx.name, "sample_rate": ctx.sample_rate, "channels": ctx.channels, "layout": ctx.layout.name,
            "duration_s": None if stream.duration is None else round(float(stream.duration * stream.time_base), 4)}  # fmt: skip
    samples = 0
    for frame in container.decode(stream):
        samples += frame.samples
    info["decoded_samples"] = samples
    info["decoded_seconds"] = round(samples / ctx.sample_rate, 4) if ctx.sample_rate else None
    return info
