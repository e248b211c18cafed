"""Boot as a user meets it: ComfyUI launched first, jobs taken while it boots, one message for what is
missing, and a fresh clone that sets itself up with the README's command."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from tests.comfy_double import WORKFLOW_MODEL_FILES, create_model_files
from tests.harness import REPO, arm_boot_faults, decode_mp4, free_port, png_b64, process_env, running_worker, wait_http
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
        # The answer says where the first job's time went: most of it waiting for ComfyUI to start.
        first = body["output"]["timings"]
        assert first["boot_wait"] > 3 and first["boot_wait"] > first["total"] - first["boot_wait"]
        warm = api.runsync({"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5, "seed": 2}})
        assert warm["output"]["timings"]["boot_wait"] < 1
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
    vol = tmp_path / "vol"
    settings = Settings.from_env({"COMFY_DIR": str(tmp_path / "none"), "VOLUME_PATH": str(vol), "TASKS": "i2v,flf2v,t2v"})
    problems = preflight(settings, gpus=None)
    assert problems[0].startswith(f"ComfyUI: {tmp_path}/none/main.py does not exist (COMFY_DIR). Install it with: make comfyui")
    assert problems[1].startswith("GPU: no NVIDIA GPU is visible (nvidia-smi is not installed)")
    assert "COMFY_EXTRA_ARGS=--cpu" in problems[1]
    nowhere = f"neither on the volume ({vol}/models) nor in the Hugging Face cache ({vol}/huggingface-cache/hub)"
    assert problems[2] == (  # i2v and flf2v load the same files: one line for both
        "models of tasks i2v, flf2v: wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors, wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors, "
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors, wan_2.1_vae.safetensors, wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors "
        f"are {nowhere}"
    )
    assert problems[3].startswith("models of task t2v: wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors, ")
    assert problems[4:] == [f"get them from a clone of this repository with: make models TASK=i2v,flf2v,t2v VOLUME={vol}"]
    cpu = Settings.from_env({"COMFY_DIR": str(REPO / "tests" / "comfy_double"), "COMFY_EXTRA_ARGS": "--cpu",
                             "VOLUME_PATH": str(vol), "TASKS": "i2v"})  # fmt: skip
    assert [p.split(":")[0] for p in preflight(cpu, gpus=[])] == ["models of task i2v", "get them from a clone of this repository with"]
    create_model_files(vol / "models", WORKFLOW_MODEL_FILES)  # the default files, not the 4-step LoRAs
    assert preflight(cpu, gpus=[]) == [
        'models of task i2v, speed "4step" (jobs asking for it fail with models_missing): '
        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors, wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors "
        f"are {nowhere}",
        'models of task i2v, options.interpolate with interpolation_model "rife" (jobs asking for it fail with models_missing): '
        f"rife_v4.26.safetensors is {nowhere}",
        'models of task i2v, options.interpolate with interpolation_model "film" (jobs asking for it fail with models_missing): '
        f"film_net_fp16.safetensors is {nowhere}",
        f"get them from a clone of this repository with: make models TASK=i2v VOLUME={vol}",
    ]


def test_the_hint_fetches_what_is_missing_from_a_clone(tmp_path: Path) -> None:
    """The command the boot log gives, run as given from the clone, is the one that brings the files."""
    vol = tmp_path / "vol"
    hint = preflight(Settings.from_env({"VOLUME_PATH": str(vol), "TASKS": "flf2v", "COMFY_EXTRA_ARGS": "--cpu",
                                        "COMFY_DIR": str(REPO / "tests" / "comfy_double")}), gpus=[])[-1]  # fmt: skip
    command = hint.split("with: ", 1)[1]
    dry = subprocess.run([*command.split(), "-s", "-n"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert f'scripts/models.py --volume "{vol}" --task flf2v' in dry.stdout


def test_without_comfyui_every_job_answers_the_fix_and_nobody_is_told_to_restart(tmp_path: Path) -> None:
    with running_worker(tmp_path, COMFY_DIR=str(tmp_path / "none")) as api:
        answers = [api.runsync({"prompt": "x", "image": png_b64()}) for _ in range(2)]
    fix = (
        f"comfyui_unavailable: ComfyUI: {tmp_path}/none/main.py does not exist (COMFY_DIR). Install it with: make comfyui "
        "(or set COMFY_DIR to a ComfyUI installed by comfy_bootstrap/install.sh, or COMFY_URL to a running one)"
    )
    assert [(a["status"], a["error"]) for a in answers] == [("FAILED", fix)] * 2
    assert all("refresh_worker" not in a for a in answers)
    log = (tmp_path / "worker.log").read_text()
    assert f"ERROR [-] wan22.handler: comfyui_boot_failed: ComfyUI could not be started: ComfyUI not found: {tmp_path}/none" in log
    assert "should be restarted" not in log and "replace this worker" not in log


def test_a_broken_stored_graph_stops_the_worker_with_workflow_invalid_in_the_log(tmp_path: Path) -> None:
    """The other boot-only code the docs name: logged with the code, and the worker exits 2."""
    workflows = tmp_path / "workflows"
    shutil.copytree(REPO / "workflows", workflows)
    graph_path = workflows / "wan22_i2v_14b_lightx2v.json"
    graph = json.loads(graph_path.read_text())
    graph = {key: node for key, node in graph.items() if node["_meta"]["title"] != "decode"}
    graph_path.write_text(json.dumps(graph))
    env = process_env(tmp_path, WORKFLOWS_DIR=str(workflows), TASKS="i2v")
    done = subprocess.run([sys.executable, "handler.py", "--rp_serve_api"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"ERROR [-] wan22.handler: workflow_invalid: workflow {graph_path} cannot be filled: role 'decode'" in done.stdout + done.stderr


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
    assert body["status"] == "FAILED" and body["error"].startswith(f"comfyui_unavailable: ComfyUI: {tmp_path}/no-comfyui/main.py")
    assert "Install it with: make comfyui" in body["error"] and "should be restarted" not in text
    assert "asking RunPod to replace this worker" not in text  # not on RunPod: no such advice


def _without_venvs(path: str) -> str:
    """PATH without virtual environments' bin folders, as in a fresh shell."""
    return os.pathsep.join(p for p in path.split(os.pathsep) if not (Path(p).parent / "pyvenv.cfg").exists())
