"""The machine's NVIDIA GPUs as ``nvidia-smi`` reports them, read once at boot before ComfyUI starts.

Launch decisions that depend on the GPU (fp8 switches, whether there is one at all) take the
parsed :class:`GpuInfo` list, so they stay pure and testable; only :func:`read_gpus` runs a command.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass

logger = logging.getLogger(__name__)

QUERY = "name,compute_cap,driver_version,memory.total"


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
