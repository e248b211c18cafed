"""The machine's NVIDIA GPUs as ``nvidia-smi`` reports them, read once at boot before ComfyUI starts,
and whether they still work after a CUDA error (:func:`check_device`).

Launch decisions that depend on the GPU (fp8 switches, whether there is one at all) take the
parsed :class:`GpuInfo` list, so they stay pure and testable; only :func:`read_gpus` runs a command.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from .child import child_environment

logger = logging.getLogger(__name__)

QUERY = "name,compute_cap,driver_version,memory.total"
#: A lost GPU makes this query fail; the volatile count is the uncorrectable ECC errors since the driver loaded.
HEALTH_QUERY = "index,ecc.errors.uncorrected.volatile.total"
#: Run in ComfyUI's Python: a fresh CUDA context, an allocation and a kernel, waited for.
ALLOCATION_CHECK = "import torch; x = torch.ones(1 << 20, device='cuda'); torch.cuda.synchronize(); assert int(x.sum()) == 1 << 20"
DEVICE_CHECK_TIMEOUT = 60.0


@dataclass(frozen=True)
class GpuInfo:
    name: str
    #: CUDA compute capability, e.g. (8, 9) for an RTX 4090 / L40S, (9, 0) for an H100.
    compute_capability: tuple[int, int]
    driver: str
    memory_mib: int

    @property
    def sm(self) -> str:
        major, minor = self.compute_capability
        return f"sm_{major}{minor}"


def parse_gpus(output: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in output.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4:
            continue
        name, cap, driver, memory = parts
        try:
            major, minor = (int(x) for x in cap.split("."))
            gpus.append(GpuInfo(name, (major, minor), driver, int(float(memory))))
        except ValueError:
            logger.warning("cannot read nvidia-smi's line %r", line)
    return gpus


def read_gpus(timeout: float = 10.0) -> list[GpuInfo] | None:
    """The GPUs ``nvidia-smi`` lists; ``[]`` when it lists none, None when it is not there or fails."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        done = subprocess.run(
            [command, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("nvidia-smi failed: %s", exc)
        return None
    if done.returncode != 0:
        logger.warning("nvidia-smi exited with %d: %s", done.returncode, (done.stderr or done.stdout).strip()[:200])
        return None
    return parse_gpus(done.stdout)


@dataclass(frozen=True)
class DeviceCheck:
    """What :func:`check_device` found: ``problem`` None when the GPUs work."""

    problem: str | None
    seconds: float

    @property
    def healthy(self) -> bool:
        return self.problem is None


def check_device(python: str, timeout: float = DEVICE_CHECK_TIMEOUT) -> DeviceCheck:
    """Whether the GPUs work, asked outside any running CUDA context: ``nvidia-smi`` answers with no
    uncorrectable ECC error (when it is there), and ``python`` (ComfyUI's) allocates and computes on CUDA."""
    started = time.monotonic()
    problem = _smi_problem(timeout) or _allocation_problem(python, timeout)
    return DeviceCheck(problem, time.monotonic() - started)


def _smi_problem(timeout: float) -> str | None:
    command = shutil.which("nvidia-smi")
    if command is None:  # a container without NVIDIA's tools: the allocation alone decides
        return None
    done = _run([command, f"--query-gpu={HEALTH_QUERY}", "--format=csv,noheader,nounits"], timeout)
    if isinstance(done, str) or done.returncode != 0:
        return f"nvidia-smi failed: {done if isinstance(done, str) else _last_line(done)}"
    lines = [[part.strip() for part in line.split(",")] for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        return "nvidia-smi lists no GPU"
    broken = [f"GPU {parts[0]} has {parts[1]} uncorrectable ECC errors" for parts in lines if len(parts) == 2 and parts[1].isdigit() and int(parts[1])]
    return "; ".join(broken) or None


def _allocation_problem(python: str, timeout: float) -> str | None:
    done = _run([python, "-c", ALLOCATION_CHECK], timeout, env=child_environment(os.environ))
    if isinstance(done, str):
        return f"a CUDA allocation in a fresh process failed: {done}"
    return None if done.returncode == 0 else f"a CUDA allocation in a fresh process failed: {_last_line(done)}"


def _run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str] | str:
    """The finished command, or why it could not run or finish."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return f"{os.path.basename(command[0])} did not finish within {timeout:g} s"
    except OSError as exc:
        return f"cannot run {command[0]}: {exc.strerror or exc}"


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"exit code {done.returncode}" + (f": {lines[-1][:200]}" if lines else "")
