"""Boot as a user meets it: ComfyUI launched first, jobs taken while it boots, one message for what is
missing, and a fresh clone that sets itself up with the README's command."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import requests

from tests.comfy_double import WORKFLOW_MODEL_FILES, create_model_files
from tests.harness import REPO, arm_boot_faults, decode_mp4, free_port, png_b64, running_worker, wait_http
from worker.preflight import preflight
from worker.settings import Settings


def test_comfyui_is_launched_before_the_sdk_and_a_job_that_arrives_early_waits(tmp_path: Path) -> None:
    arm_boot_faults(tmp_path, {"mode": "boot_delay", "seconds": 8})  # ComfyUI answers 8 s after its launch
    with running_worker(tmp_path) as api:
        comfy = [c for c in psutil.Process(api.proc.pid).children() if "main.py" in " ".join(c.cmdline())]
        assert comfy, "ComfyUI runs as the worker's child"
        with pytest.raises(requests.ConnectionError):  # the local API answers: the job loop did not wait
            requests.get(f"http://127.0.0.1:{api.env['COMFY_PORT']}/system_stats", timeout=1)
        body = api.runsync({"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5}})
        assert body["status"] == "COMPLETED", body.get("error")
        assert decode_mp4(base64.b64decode(body["output"]["video"]))["frames"] == 5
    log = (tmp_path / "worker.log").read_text()
    launched = log.index("ComfyUI started (pid")
    assert launched < log.index("settings: ")  # launched before anything else of the boot
    assert "waiting for ComfyUI at" in log or "ComfyUI is ready" in log


def fake_nvidia_smi(folder: Path, line: str) -> str:
    """A PATH whose nvidia-smi answers the worker's query with ``line`` (a GPU this machine lacks)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{line}'\n")
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_sage_asked_for_without_sageattention_warns_once_and_runs_jobs_with_pytorch_attention(tmp_path: Path) -> None:
    path = fake_nvidia_smi(tmp_path / "bin", "NVIDIA GeForce RTX 4090, 8.9, 570.124.06, 24564")
    with running_worker(tmp_path, COMFY_ATTENTION="sage", COMFY_FAST="auto", PATH=path) as api:
        body = api.runsync({"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5}})
        assert body["status"] == "COMPLETED", body.get("error")
        argv = requests.get(f"http://127.0.0.1:{api.env['COMFY_PORT']}/system_stats", timeout=5).json()["system"]["argv"]
    assert "--use-pytorch-cross-attention" in argv and "--use-sage-attention" not in argv
    assert argv[argv.index("--fast") :][:2] == ["--fast", "fp8_matrix_mult"]
    log = (tmp_path / "worker.log").read_text()
    warning = (
        "COMFY_ATTENTION=sage: ComfyUI's Python cannot import SageAttention: ModuleNotFoundError: No module named "
        "'sageattention'; ComfyUI is launched with PyTorch attention (--use-pytorch-cross-attention) instead."
    )
    assert log.count(warning) == 1
    assert "GPUs for the launch settings: sm_89 (NVIDIA GeForce RTX 4090) (nvidia-smi" in log
    assert log.index("SageAttention unusable: ModuleNotFoundError") < log.index(warning) < log.index("ComfyUI started (pid")
    assert "  - --fast fp8_matrix_mult (COMFY_FAST=auto: sm_89 (NVIDIA GeForce RTX 4090) has fp8 tensor cores;" in log


def test_sage_is_passed_where_its_kernels_are_for_the_gpu(tmp_path: Path) -> None:
    from tests.test_speed import IMAGE_BUILD, fake_sageattention

    path = fake_nvidia_smi(tmp_path / "bin", "NVIDIA GeForce RTX 5090, 12.0, 575.51.03, 32607")
    package = fake_sageattention(tmp_path / "site", IMAGE_BUILD)
    with running_worker(tmp_path, COMFY_ATTENTION="sage", PATH=path, PYTHONPATH=str(package)) as api:
        argv = requests.get(f"http://127.0.0.1:{api.env['COMFY_PORT']}/system_stats", timeout=5).json()["system"]["argv"]
    assert "--use-sage-attention" in argv and "--fast" not in argv
    log = (tmp_path / "worker.log").read_text()
    assert "attention: sage (--use-sage-attention): SageAttention 2.2.0 has kernels for sm_120 (NVIDIA GeForce RTX 5090)" in log
    assert "WARNING" not in log.split("ComfyUI started (pid")[0]


def test_what_is_missing_is_said_once_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    settings = Settings.from_env({"COMFY_DIR": str(tmp_path / "none"), "VOLUME_PATH": str(tmp_path / "vol"), "TASKS": "i2v,t2v"})
    problems = preflight(settings, gpus=None)
    assert problems[0].startswith(f"ComfyUI: {tmp_path}/none/main.py does not exist (COMFY_DIR). Install it with: make comfyui")
    assert problems[1].startswith("GPU: no NVIDIA GPU is visible (nvidia-smi is not installed)")
    assert "COMFY_EXTRA_ARGS=--cpu" in problems[1]
    assert problems[2].startswith(f"models of task i2v: 5 of 5 files are not on the volume {tmp_path}/vol")
    assert problems[2].endswith(f"Download them with: python scripts/models.py --task i2v --volume {tmp_path}/vol")
    assert problems[3].startswith("models of task t2v: 5 of 5 files") and len(problems) == 4  # its command brings the 4-step LoRAs too
    cpu = Settings.from_env({"COMFY_DIR": str(REPO / "tests" / "comfy_double"), "COMFY_EXTRA_ARGS": "--cpu",
                             "VOLUME_PATH": str(tmp_path / "vol"), "TASKS": "i2v"})  # fmt: skip
    assert [p.split(":")[0] for p in preflight(cpu, gpus=[])] == ["models of task i2v"]
    create_model_files(tmp_path / "vol" / "models", WORKFLOW_MODEL_FILES)  # the default files, not the 4-step LoRAs
    assert preflight(cpu, gpus=[]) == [
        'speed "4step" of task i2v: wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors, '
        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors not on the volume (jobs asking for it fail with "
        f"models_missing). Download with: python scripts/models.py --task i2v --speed 4step --volume {tmp_path}/vol"
    ]


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")
def test_a_fresh_clone_runs_the_worker_with_the_readme_command(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    command = re.search(r"^(make serve)\b", readme, re.MULTILINE)
    assert command, "the README's worker command is `make serve`"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(COMFY_DIR=str(tmp_path / "no-comfyui"), WORKER_DIR=str(tmp_path / "work"), VOLUME_PATH=str(tmp_path / "vol"),
               COMFY_PORT=str(free_port()), PATH=_without_venvs(env["PATH"]))  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "serve", f"API_PORT={port}"], cwd=clone, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/docs", timeout=420)  # the first run installs requirements.txt
        body = requests.post(f"http://127.0.0.1:{port}/runsync", json={"input": {"prompt": "x", "image": png_b64()}}, timeout=120).json()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert (clone / ".venv" / "bin" / "python").exists()
    assert "the worker starts, but cannot make videos until this is fixed" in text and "make comfyui" in text
    assert body["status"] == "FAILED" and "ComfyUI not found" in body["error"]
    assert "asking RunPod to replace this worker" not in text  # not on RunPod: no such advice


def _without_venvs(path: str) -> str:
    """PATH without virtual environments' bin folders, as in a fresh shell."""
    return os.pathsep.join(p for p in path.split(os.pathsep) if not (Path(p).parent / "pyvenv.cfg").exists())
