"""The ComfyUI child's lifecycle, with real processes: a tiny fake ComfyUI ``main.py`` in a temp dir.

The fake listens on ``--listen``/``--port`` and answers ``GET /system_stats``; ``fake.json`` in its
folder (:func:`configure_fake`; the worker gives ComfyUI a scrubbed environment, so not env vars) makes
it record its argv and environment, fail at boot, start slowly, spawn a grandchild that ignores
SIGTERM, or hang.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from comfy_bootstrap.config import ComfySettings as Settings
from comfy_bootstrap.errors import ComfyBootError, ComfyUnavailable
from comfy_bootstrap.gpu import GpuInfo
from comfy_bootstrap.launch import MemoryInfo
from comfy_bootstrap.server import ComfyServer, comfy_server
from comfy_bootstrap.speed import CudaArchs, SageProbe

REPO = Path(__file__).resolve().parent.parent
MEMORY = MemoryInfo(host_ram=64 * 1024**3, cgroup_limit=None)

FAKE_MAIN = textwrap.dedent(
    """
    import argparse, json, os, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--listen")
    parser.add_argument("--port", type=int)
    args, _ = parser.parse_known_args()
    config = json.load(open("fake.json")) if os.path.exists("fake.json") else {}
    if config.get("FAKE_ARGV_FILE"):
        with open(config["FAKE_ARGV_FILE"], "w") as f:
            json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "env": dict(os.environ)}, f)
    print("fake ComfyUI starting", flush=True)
    if config.get("FAKE_BOOT_FAIL"):
        print("RuntimeError: fake boot failure: no CUDA GPUs are available", file=sys.stderr, flush=True)
        sys.exit(3)
    time.sleep(float(config.get("FAKE_SLOW_START", "0")))
    if config.get("FAKE_GRANDCHILD_PIDFILE"):
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", code])
        with open(config["FAKE_GRANDCHILD_PIDFILE"], "w") as f:
            f.write(str(child.pid))
    hang_file = config.get("FAKE_HANG_FILE", "")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if hang_file and os.path.exists(hang_file):
                time.sleep(600)  # single-threaded server: nothing answers any more
            body = b'{"system": {"comfyui_version": "fake"}}'
            self.send_response(200 if self.path in ("/system_stats", "/prompt") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    print("To see the GUI go to: http://%s:%d" % (args.listen, args.port), flush=True)
    HTTPServer((args.listen, args.port), Handler).serve_forever()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure_fake(comfy_dir: Path, **values: str) -> None:
    """Add ``values`` (``FAKE_SLOW_START="1.2"``, ...) to the fake ComfyUI's ``fake.json``."""
    path = comfy_dir / "fake.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, **values}))


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_until(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def comfy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory of ComfyServer over the fake ComfyUI; every server is stopped at the end."""
    comfy_dir = tmp_path / "comfyui"
    comfy_dir.mkdir()
    (comfy_dir / "main.py").write_text(FAKE_MAIN)
    configure_fake(comfy_dir, FAKE_ARGV_FILE=str(tmp_path / "argv.json"))
    servers: list[ComfyServer] = []

    def make(boot_timeout: float = 10.0, settings: dict | None = None, **kw) -> ComfyServer:
        settings = Settings(
            comfy_dir=comfy_dir,
            comfy_python=sys.executable,
            port=free_port(),
            work_dir=tmp_path / "work",
            volume_path=tmp_path / "volume",
            boot_timeout=boot_timeout,
            **(settings or {}),
        )
        server = comfy_server(settings, memory=MEMORY, poll_interval=0.1, health_timeout=0.5, stop_grace=1.0, **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def test_start_waits_for_slow_start_and_passes_flags(comfy, tmp_path: Path, monkeypatch) -> None:
    configure_fake(tmp_path / "comfyui", FAKE_SLOW_START="1.2")
    server = comfy()
    t0 = time.monotonic()
    server.start()
    assert time.monotonic() - t0 >= 1.1
    assert server.is_alive() and server.exit_code is None

    recorded = json.loads((tmp_path / "argv.json").read_text())
    argv = recorded["argv"]
    assert recorded["cwd"] == str(tmp_path / "comfyui") and recorded["pid"] == server.pid
    assert argv[argv.index("--listen") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == str(server.settings.port)
    for flag in ("--disable-auto-launch", "--use-pytorch-cross-attention"):
        assert flag in argv
    assert argv[argv.index("--preview-method") + 1] == "none"
    assert argv[argv.index("--extra-model-paths-config") + 1] == str(server.settings.extra_model_paths_file)
    assert "--highvram" not in argv and "--disable-pinned-memory" not in argv
    for d in (server.settings.input_dir, server.settings.output_dir, server.settings.temp_dir, server.settings.user_dir):
        assert d.is_dir()
    assert server.settings.extra_model_paths_file.read_text().startswith("runpod_volume:\n")
    assert "To see the GUI" in server.log_tail()
    server.ensure_alive()  # healthy: no restart
    assert server.restarts == 0


def test_launch_returns_at_once_and_the_first_job_waits_for_readiness(comfy, tmp_path: Path, monkeypatch, caplog) -> None:
    configure_fake(tmp_path / "comfyui", FAKE_SLOW_START="1.5")
    server = comfy()
    t0 = time.monotonic()
    server.launch()
    assert time.monotonic() - t0 < 0.5 and server.pid is not None
    caplog.set_level("INFO", logger="comfy_bootstrap.launched")
    monkeypatch.setattr(server, "wait_ready", functools.partial(server.wait_ready, report_every=0.5))
    server.ensure_alive()  # still booting: waits, does not restart it
    assert time.monotonic() - t0 >= 1.4 and server.is_alive() and server.restarts == 0
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for ComfyUI")]
    assert waiting and "its last log line: fake ComfyUI starting" in waiting[0]


def test_a_launch_failure_is_quoted_by_every_later_job(comfy, tmp_path: Path) -> None:
    server = comfy()
    (tmp_path / "comfyui" / "main.py").unlink()
    with pytest.raises(ComfyBootError, match="ComfyUI not found"):
        server.launch()
    for _ in range(3):
        with pytest.raises(ComfyUnavailable) as info:
            server.ensure_alive()
        assert "ComfyUI not found" in str(info.value) and info.value.refresh_worker is True


def test_boot_failure_raises_with_exit_code_and_log_tail(comfy, tmp_path: Path, monkeypatch) -> None:
    configure_fake(tmp_path / "comfyui", FAKE_BOOT_FAIL="1")
    server = comfy()
    with pytest.raises(ComfyBootError) as info:
        server.start()
    msg = str(info.value)
    assert "exited with exit code 3 while starting" in msg
    assert "RuntimeError: fake boot failure: no CUDA GPUs are available" in msg
    assert str(server.settings.log_file) in msg
    assert server.exit_code == 3


def test_boot_timeout_stops_the_child(comfy, tmp_path: Path, monkeypatch) -> None:
    configure_fake(tmp_path / "comfyui", FAKE_SLOW_START="60")
    server = comfy(boot_timeout=1.0)
    with pytest.raises(ComfyBootError, match=r"did not answer .*/system_stats within 1 s") as info:
        server.start()
    assert "fake ComfyUI starting" in str(info.value)
    assert server.exit_code is not None and not running(server.pid)


def test_killed_child_is_detected_and_restarted(comfy) -> None:
    server = comfy()
    server.start()
    old = server.pid
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: server.exit_code is not None)
    assert not server.is_alive()
    server.ensure_alive()
    assert server.pid != old and server.is_alive() and server.restarts == 1
    assert "fake ComfyUI starting" in server.log_tail()


def test_the_gpu_and_sageattention_are_read_once_before_the_first_launch_and_only_when_needed(comfy, tmp_path: Path) -> None:
    calls: list[str] = []
    rtx_4090 = GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), "570.124.06", 24564)

    def gpus() -> list[GpuInfo]:
        calls.append("nvidia-smi")
        return [rtx_4090]

    def probe(python: str) -> SageProbe:
        calls.append(f"probe {python}")
        built = CudaArchs(sass=frozenset({(8, 9), (9, 0), (12, 0)}))
        return SageProbe(version="2.2.0", kernels={"_qattn_sm89": built, "_fused": built})

    plain = comfy(gpu_reader=gpus, sage_prober=probe)
    plain.start()
    assert calls == [] and plain.plan.report() == {"attention": "pytorch", "fast": []}
    plain.stop()

    server = comfy(settings={"attention": "sage", "fast": "auto"}, gpu_reader=gpus, sage_prober=probe)
    server.start()
    argv = json.loads((tmp_path / "argv.json").read_text())["argv"]
    assert "--use-sage-attention" in argv and argv[-2:] == ["--fast", "fp8_matrix_mult"]
    assert server.plan.report() == {"attention": "sage", "fast": ["fp8_matrix_mult"]}
    os.kill(server.pid, signal.SIGKILL)
    assert wait_until(lambda: server.exit_code is not None)
    server.ensure_alive()
    assert server.restarts == 1 and "--use-sage-attention" in json.loads((tmp_path / "argv.json").read_text())["argv"]
    assert calls == ["nvidia-smi", f"probe {sys.executable}"]  # not again for the restart


def test_hung_child_is_detected_and_restarted(comfy, tmp_path: Path, monkeypatch) -> None:
    hang = tmp_path / "hang"
    configure_fake(tmp_path / "comfyui", FAKE_HANG_FILE=str(hang))
    server = comfy()
    server.start()
    old = server.pid
    hang.touch()
    assert not server.is_alive()
    hang.unlink()  # the old server stays stuck in its handler; a new one will answer
    server.ensure_alive()
    assert server.pid != old and server.is_alive()
    assert not running(old)


def test_stop_ends_the_whole_group_including_grandchild(comfy, tmp_path: Path, monkeypatch) -> None:
    pidfile = tmp_path / "grandchild.pid"
    configure_fake(tmp_path / "comfyui", FAKE_GRANDCHILD_PIDFILE=str(pidfile))
    server = comfy()
    server.start()
    grandchild = int(pidfile.read_text())
    assert running(grandchild) and os.getpgid(grandchild) == server.pid
    server.stop()
    assert not running(server.pid)
    assert wait_until(lambda: not running(grandchild), 2.0), "grandchild (ignores SIGTERM) survived stop()"
    assert server.exit_code is not None and not server.is_alive()
    server.stop()  # idempotent


def test_ensure_alive_gives_up_after_two_failed_restarts(comfy, tmp_path: Path, monkeypatch) -> None:
    server = comfy()
    server.start()
    configure_fake(tmp_path / "comfyui", FAKE_BOOT_FAIL="1")
    os.kill(server.pid, signal.SIGKILL)
    with pytest.raises(ComfyUnavailable) as info:
        server.ensure_alive()
    assert info.value.refresh_worker is True
    assert "2 attempts in a row failed" in str(info.value) and "fake boot failure" in str(info.value)
    with pytest.raises(ComfyUnavailable) as again:  # no more attempts: the worker needs replacing
        server.ensure_alive()
    assert again.value.refresh_worker is True


def test_missing_main_py_and_busy_port(comfy, tmp_path: Path) -> None:
    server = comfy()
    (tmp_path / "comfyui" / "main.py").rename(tmp_path / "comfyui" / "away.py")
    with pytest.raises(ComfyBootError, match="ComfyUI not found"):
        server.start()
    (tmp_path / "comfyui" / "away.py").rename(tmp_path / "comfyui" / "main.py")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", server.settings.port))
        busy.listen()
        with pytest.raises(ComfyBootError, match="already in use"):
            server.start()
    assert server.pid is None


class _Stats(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path in ("/system_stats", "/prompt") else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a):
        pass


def test_attach_mode_running_then_gone(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    server = comfy_server(Settings(url=url, work_dir=tmp_path, boot_timeout=5), health_timeout=0.5)
    server.start()
    assert server.is_alive() and server.pid is None and server.exit_code is None
    server.ensure_alive()
    assert server.log_tail() == ""
    httpd.shutdown()
    httpd.server_close()
    assert not server.is_alive()
    with pytest.raises(ComfyUnavailable, match=rf"attached ComfyUI at {url.rstrip('/')} does not answer") as info:
        server.ensure_alive()
    assert not info.value.refresh_worker
    with pytest.raises(ComfyUnavailable, match="cannot be restarted"):
        server.restart("test")
    server.stop()  # nothing to stop: no error


def test_attach_mode_dead_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    server = comfy_server(Settings(url=url, work_dir=tmp_path, boot_timeout=0.5), health_timeout=0.3)
    with pytest.raises(ComfyBootError, match=rf"attached ComfyUI at {url} did not answer"):
        server.start()
    assert not server.is_alive()
    with pytest.raises(ComfyUnavailable, match=rf"attached ComfyUI at {url} does not answer \(connection failed"):
        server.ensure_alive()


WORKER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from pathlib import Path
    from comfy_bootstrap.config import ComfySettings as Settings
    from comfy_bootstrap.child import stop_on_exit
    from comfy_bootstrap.launch import MemoryInfo
    from comfy_bootstrap.server import comfy_server

    comfy_dir, work_dir, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    settings = Settings(comfy_dir=Path(comfy_dir), comfy_python=sys.executable, port=port,
                        work_dir=Path(work_dir), boot_timeout=10)
    server = comfy_server(settings, memory=MemoryInfo(None, None), poll_interval=0.1, stop_grace=1.0)
    stop_on_exit(server.shutdown)
    server.start()
    print(server.pid, flush=True)
    if mode == "wait":
        time.sleep(60)
    """
)


@pytest.mark.parametrize("ending", ["sigterm", "sigint", "normal-exit"])
def test_worker_exit_ends_comfyui(tmp_path: Path, monkeypatch, ending: str) -> None:
    comfy_dir = tmp_path / "comfyui"
    comfy_dir.mkdir()
    (comfy_dir / "main.py").write_text(FAKE_MAIN)
    pidfile = tmp_path / "gc.pid"
    configure_fake(tmp_path / "comfyui", FAKE_GRANDCHILD_PIDFILE=str(pidfile))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    mode = "exit" if ending == "normal-exit" else "wait"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(comfy_dir), str(tmp_path / "w"), str(free_port()), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        comfy_pid = int(worker.stdout.readline())
        grandchild = int(pidfile.read_text())
        if ending == "sigterm":
            worker.send_signal(signal.SIGTERM)
        elif ending == "sigint":
            worker.send_signal(signal.SIGINT)
        code = worker.wait(timeout=10)
        assert code != 0 if ending != "normal-exit" else code == 0
        assert wait_until(lambda: not running(comfy_pid) and not running(grandchild), 3.0)
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()


# --- The child's environment: what ComfyUI needs, never a secret ----------------------------------

SECRETS = {
    "HF_TOKEN": "hf_fakeprocesstoken1",
    "CIVITAI_TOKEN": "civitaifaketoken2",
    "BUCKET_ACCESS_KEY_ID": "AKIAFAKEPROCESSKEY3",
    "BUCKET_SECRET_ACCESS_KEY": "bucketsecretvalue4",
    "RUNPOD_AI_API_KEY": "rpa_fakeprocesskey5",
    "AWS_SESSION_TOKEN": "awssessiontoken6",
    "TORCH_HUB_TOKEN": "torchhubtoken7",  # an allowed prefix does not let a secret through
    "CUDA_PASSWORD": "cudapassword8",
}


def test_comfyui_runs_with_a_scrubbed_environment(comfy, tmp_path: Path, monkeypatch) -> None:
    for name, value in {**SECRETS, "CUDA_VISIBLE_DEVICES": "0", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
                        "HF_HOME": "/models/hf", "LC_ALL": "C.UTF-8", "VHS_STRICT_PATHS": "0",
                        "HF_HUB_OFFLINE": "0", "SOME_OTHER_SETTING": "x"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    comfy().start()
    env = json.loads((tmp_path / "argv.json").read_text())["env"]
    assert not {name for name in SECRETS if name in env}
    assert not [value for value in SECRETS.values() if value in json.dumps(env)]
    assert env["PATH"] == os.environ["PATH"] and env["CUDA_VISIBLE_DEVICES"] == "0" and env["LC_ALL"] == "C.UTF-8"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True" and env["HF_HOME"] == "/models/hf"
    assert env["VHS_STRICT_PATHS"] == "1" and env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert "SOME_OTHER_SETTING" not in env and "COMFY_PORT" not in env
