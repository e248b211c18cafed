"""comfy_bootstrap/gpu.py's device check, with real processes: a stand-in ``nvidia-smi`` on PATH and
stand-ins for ComfyUI's Python (this machine has no GPU)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from comfy_bootstrap.gpu import HEALTH_QUERY, check_device


def executable(folder: Path, name: str, body: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``smi(body)``: an ``nvidia-smi`` first on PATH that runs ``body`` (it records its arguments)."""

    def install(body: str) -> Path:
        args = tmp_path / "smi-args"
        executable(tmp_path / "bin", "nvidia-smi", f'echo "$@" > {args}\n{body}')
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
        return args

    return install


def test_a_working_gpu_passes(smi, tmp_path: Path) -> None:
    args = smi("echo '0, 0'; echo '1, [N/A]'")  # a consumer GPU has no ECC counter
    check = check_device(executable(tmp_path, "python", "exit 0"))
    assert check.healthy and check.problem is None and check.seconds < 5
    assert f"--query-gpu={HEALTH_QUERY}" in args.read_text()


def test_a_lost_gpu_fails_at_nvidia_smi(smi, tmp_path: Path) -> None:
    smi("echo 'Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.  Reboot the system to recover this GPU' >&2; exit 15")
    check = check_device(executable(tmp_path, "python", "exit 0"))
    assert check.problem == (
        "nvidia-smi failed: exit code 15: Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.  "
        "Reboot the system to recover this GPU"
    )


def test_uncorrectable_ecc_errors_fail(smi, tmp_path: Path) -> None:
    smi("echo '0, 0'; echo '1, 3'")
    assert check_device(executable(tmp_path, "python", "exit 0")).problem == "GPU 1 has 3 uncorrectable ECC errors"


def test_a_failing_cuda_allocation_fails(smi) -> None:
    smi("echo '0, 0'")
    check = check_device(sys.executable)  # this Python has no torch, as a broken CUDA has no working allocation
    assert check.problem == (
        "a CUDA allocation in a fresh process failed: exit code 1: ModuleNotFoundError: No module named 'torch'"
    )


def test_a_hanging_allocation_fails_at_the_timeout(smi, tmp_path: Path) -> None:
    smi("echo '0, 0'")
    check = check_device(executable(tmp_path, "python", "sleep 30"), timeout=0.5)
    assert check.problem == "a CUDA allocation in a fresh process failed: python did not finish within 0.5 s"
    assert check.seconds < 5


def test_without_nvidia_smi_the_allocation_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert check_device(executable(tmp_path, "python", "exit 0")).healthy
    assert not check_device(executable(tmp_path, "python", "echo 'CUDA error: unspecified launch failure' >&2; exit 1")).healthy


def test_the_allocation_runs_with_comfyuis_scrubbed_environment(smi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi("echo '0, 0'")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_the_check")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    seen = tmp_path / "env"
    check_device(executable(tmp_path, "python", f"env > {seen}"))
    assert "CUDA_VISIBLE_DEVICES=3" in seen.read_text() and "hf_secret_for_the_check" not in seen.read_text()
