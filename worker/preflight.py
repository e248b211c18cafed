"""What this worker still lacks to make videos, each with the one command that provides it.

Checked once at boot, after ComfyUI was launched: the worker starts anyway (jobs then fail with a
clear error), and the boot log says in one message what is missing and how to get it.
"""

from __future__ import annotations

from pathlib import Path

from comfy_bootstrap.gpu import GpuInfo
from comfy_bootstrap.models import missing_on_volume, on_volume
from worker.settings import Settings
from worker.tasks import REGISTRY


def preflight(settings: Settings, gpus: list[GpuInfo] | None) -> list[str]:
    """One line per missing piece: ComfyUI, a GPU, each served task's model files, then those only a speed preset loads."""
    comfy = settings.comfy
    if comfy.attached:  # the attached ComfyUI has its own models and GPU
        return []
    problems = []
    if not (comfy.comfy_dir / "main.py").is_file():
        problems.append(
            f"ComfyUI: {comfy.comfy_dir / 'main.py'} does not exist (COMFY_DIR). Install it with: make comfyui "
            "(or set COMFY_DIR to a ComfyUI installed by comfy_bootstrap/install.sh, or COMFY_URL to a running one)"
        )
    if not gpus and "--cpu" not in comfy.extra_args:
        seen = "nvidia-smi is not installed" if gpus is None else "nvidia-smi lists no GPU"
        problems.append(
            f"GPU: no NVIDIA GPU is visible ({seen}), and ComfyUI needs one. To try the worker on the CPU "
            "(a tiny job takes minutes) set COMFY_EXTRA_ARGS=--cpu"
        )
    for name in settings.tasks:
        task = REGISTRY[name]
        files = task.model_files(settings.model_names)
        missing = missing_on_volume(comfy, files)
        if missing:
            problems.append(
                f"models of task {name}: {len(missing)} of {len(files)} files are not on the volume {comfy.volume_path} "
                f"({', '.join(f.name for f in missing)}). Download them with: "
                f"python scripts/models.py --task {name} --volume {comfy.volume_path}"
            )
            continue  # that command fetches the speed presets' files too
        for speed in task.speeds:
            extra = [f for f in task.model_files(settings.model_names, speed) if f not in files]
            absent = missing_on_volume(comfy, extra)
            if absent:
                problems.append(
                    f'speed "{speed}" of task {name}: {", ".join(f.name for f in absent)} not on the volume (jobs asking '
                    f"for it fail with models_missing). Download with: "
                    f"python scripts/models.py --task {name} --speed {speed} --volume {comfy.volume_path}"
                )
    return problems


def model_paths(settings: Settings, task: str) -> list[Path]:
    """The task's model files that are on the volume, where ComfyUI will load them from."""
    files = REGISTRY[task].model_files(settings.model_names)
    return [path for path in (on_volume(settings.comfy, f) for f in files) if path is not None]
