"""What this worker still lacks to make videos, each with the one command that provides it.

Checked once at boot, after ComfyUI was launched: the worker starts anyway (jobs then fail with a
clear error), and the boot log says in one message what is missing and how to get it.
"""

from __future__ import annotations

from pathlib import Path

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.gpu import GpuInfo
from comfy_bootstrap.models import ModelFile, find_model, missing_files
from worker.settings import Settings
from worker.tasks import REGISTRY


def preflight(settings: Settings, gpus: list[GpuInfo] | None) -> list[str]:
    """One line per missing piece: ComfyUI, a GPU, the served tasks' model files, and the command that fetches those."""
    comfy = settings.comfy
    if comfy.attached:  # the attached ComfyUI has its own models and GPU
        return []
    missing = comfy_missing(comfy)
    problems = [missing] if missing else []
    if not gpus and "--cpu" not in comfy.extra_args:
        seen = "nvidia-smi is not installed" if gpus is None else "nvidia-smi lists no GPU"
        problems.append(
            f"GPU: no NVIDIA GPU is visible ({seen}), and ComfyUI needs one. To try the worker on the CPU "
            "(a tiny job takes minutes) set COMFY_EXTRA_ARGS=--cpu"
        )
    return problems + model_problems(settings)


def comfy_missing(comfy: ComfySettings) -> str | None:
    """What to do when there is no ComfyUI to launch, or None (also the error of every job meanwhile)."""
    if comfy.attached or (comfy.comfy_dir / "main.py").is_file():
        return None
    return (
        f"ComfyUI: {comfy.comfy_dir / 'main.py'} does not exist (COMFY_DIR). Install it with: make comfyui "
        "(or set COMFY_DIR to a ComfyUI installed by comfy_bootstrap/install.sh, or COMFY_URL to a running one)"
    )


def model_problems(settings: Settings) -> list[str]:
    """A line per set of tasks missing the same files for the same jobs (every job, a speed, those
    that use an optional file), then one command that fetches them all."""
    comfy = settings.comfy
    groups: dict[tuple[str, tuple[ModelFile, ...]], list[str]] = {}
    for name in settings.tasks:
        for jobs, missing in _missing_by_jobs(settings, name):
            groups.setdefault((jobs, tuple(missing)), []).append(name)
    if not groups:
        return []
    where = f"neither on the volume ({comfy.volume_path / 'models'}) nor in the Hugging Face cache ({comfy.hf_cache_dir})"
    lines = [
        f"models of task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)}{_jobs_note(jobs)}: {', '.join(f.name for f in files)} "
        f"{'is' if len(files) == 1 else 'are'} {where}"
        for (jobs, files), tasks in groups.items()
    ]
    tasks = ",".join(dict.fromkeys(task for names in groups.values() for task in names))
    return [*lines, f"get them from a clone of this repository with: make models TASK={tasks} VOLUME={comfy.volume_path}"]


def model_paths(settings: Settings, task: str) -> list[Path]:
    """The files every job of the task loads, where they are (the cached model's link, else the volume's copy)."""
    files = REGISTRY[task].every_job_files(settings.model_names)
    return [path for path in (find_model(settings.comfy, f) for f in files) if path is not None]


def _missing_by_jobs(settings: Settings, name: str) -> list[tuple[str, list[ModelFile]]]:
    """The files every job of the task loads that are missing (jobs ""); when none is, the missing files
    of each speed preset (jobs ``speed "4step"``) and of the jobs that load an optional file."""
    task, names = REGISTRY[name], settings.model_names
    every_job = task.every_job_files(names)
    missing = missing_files(settings.comfy, every_job)
    if missing:
        return [("", missing)]
    speeds = ((f'speed "{speed}"', [f for f in task.every_job_files(names, speed) if f not in every_job]) for speed in task.speeds)
    optional = ((spec.loaded_by.jobs, [spec.file(names)]) for spec in task.specs() if spec.loaded_by is not None)
    return [(jobs, absent) for jobs, extra in (*speeds, *optional) if (absent := missing_files(settings.comfy, extra))]


def _jobs_note(jobs: str) -> str:
    return f", {jobs} (jobs asking for it fail with models_missing)" if jobs else ""
