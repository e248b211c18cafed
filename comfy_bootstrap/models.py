"""Model files on the volume: where ComfyUI looks for them, and whether it lists the ones a graph needs.

Models live on the network volume, or in a Hugging Face cache on the volume's path (RunPod's cached
models, :mod:`comfy_bootstrap.hf_cache`), whose files the worker links into folders of its own.
ComfyUI learns these folders from the ``extra_model_paths.yaml`` the worker writes
(:func:`write_extra_model_paths`): the worker's own first, so a cached file wins over the volume's
copy, then the volume's; the legacy folder names ``models/unet`` and ``models/clip`` are searched
too, because many existing volumes use them.

Before a prompt is queued, :func:`check_models` asks ComfyUI (``GET /models/{folder}``) what it
actually lists, so a missing file is reported by name with the folders searched, instead of
ComfyUI's bare "Value not in list" on the loader node. Which files a graph needs is the caller's
knowledge; this module only knows ComfyUI's folders.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import ComfySettings
from .errors import ModelsMissing

logger = logging.getLogger(__name__)

#: Folders of the volume (relative to ``VOLUME_PATH``) that ComfyUI searches for each ComfyUI folder,
#: in the order written to extra_model_paths.yaml. ``unet``/``clip`` are the pre-2025 names.
VOLUME_SUBDIRS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("models/diffusion_models", "models/unet"),
    "text_encoders": ("models/text_encoders", "models/clip"),
    "vae": ("models/vae",),
    "loras": ("models/loras",),
    "audio_encoders": ("models/audio_encoders",),
    "clip_vision": ("models/clip_vision",),
    "frame_interpolation": ("models/frame_interpolation",),
    "checkpoints": ("models/checkpoints",),
}

#: Where a Hugging Face repository may keep the file ``name`` of a ComfyUI ``folder``, in the order
#: tried (comfy_bootstrap/hf_cache.py): Comfy-Org's repackaged layout, then flat ones.
LAYOUTS = ("split_files/{folder}/{name}", "{folder}/{name}", "{name}")

#: The YAML section names; any name works for ComfyUI, these say where the paths come from.
YAML_SECTION = "runpod_volume"
EXTRA_SECTION = "wan22_worker"

#: Model file suffixes worth listing in :func:`describe_volume`.
_MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_./+-]+$")


@dataclass(frozen=True)
class ModelFile:
    """One file a graph needs: ``name`` as ComfyUI lists it inside ``folder``.

    ``label`` says what it is ("VAE") and ``setting`` how the operator changes it (an environment
    variable), both for messages.
    """

    folder: str
    name: str
    label: str = "model file"
    setting: str = ""

    @property
    def volume_subdirs(self) -> tuple[str, ...]:
        return VOLUME_SUBDIRS[self.folder]


def searched_dirs(settings: ComfySettings, folder: str) -> list[Path]:
    """Absolute volume folders ComfyUI searches for ``folder`` (through extra_model_paths.yaml)."""
    return [settings.volume_path / sub for sub in VOLUME_SUBDIRS[folder]]


def model_dirs(settings: ComfySettings, folder: str) -> list[Path]:
    """Every folder ComfyUI searches for ``folder``, in its order: the worker's own, then the volume's."""
    return [path for name, path in settings.extra_model_dirs if name == folder] + searched_dirs(settings, folder)


def extra_model_paths_yaml(settings: ComfySettings) -> str:
    """The text of extra_model_paths.yaml (hand-written: the worker itself does not need PyYAML).

    ComfyUI (``utils/extra_config.py``) reads each value as newline-separated paths and joins each
    to ``base_path``; a literal block (``|``) keeps one path per line. ``folder_paths.get_full_path``
    takes a file from the first folder that holds it, in the order the sections add them: the
    worker's own folders come first, so a cached model's file wins over the volume's copy.
    """
    extra: dict[str, list[str]] = {}
    for folder, path in settings.extra_model_dirs:  # absolute paths, no base_path: ComfyUI takes them as they are
        extra.setdefault(folder, []).append(str(path))
    lines = [f"{EXTRA_SECTION}:", *_yaml_folders(extra)] if extra else []
    lines += [f"{YAML_SECTION}:", f"  base_path: {_yaml_scalar(str(settings.volume_path))}"]
    lines += _yaml_folders({folder: list(subdirs) for folder, subdirs in VOLUME_SUBDIRS.items()})
    return "\n".join(lines) + "\n"


def _yaml_folders(paths: dict[str, list[str]]) -> list[str]:
    """One key per folder (a YAML mapping keeps only the last of repeated keys), several paths as a block."""
    lines = []
    for folder, values in paths.items():
        if len(values) == 1:
            lines.append(f"  {folder}: {_yaml_scalar(values[0])}")
        else:
            lines.append(f"  {folder}: |")
            lines.extend(f"    {value}" for value in values)
    return lines


def write_extra_model_paths(settings: ComfySettings) -> Path:
    """Write ``settings.extra_model_paths_file`` (atomically) and return its path."""
    path = settings.extra_model_paths_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(extra_model_paths_yaml(settings), encoding="utf-8")
    os.replace(tmp, path)
    return path


def check_models(
    settings: ComfySettings, files: Sequence[ModelFile], list_folder: Callable[[str], list[str]], *, subject: str = ""
) -> None:
    """Raise :class:`ModelsMissing` naming every one of ``files`` ComfyUI does not list; else return.

    ``subject`` starts the message (which job needs the files). ``list_folder(folder)`` returns ComfyUI's ``GET /models/{folder}`` (names relative to the folder,
    ``/``-separated). Only current folder names are asked: ``/models/unet`` and ``/models/clip`` are
    404 in v0.30.0, their files are listed under ``diffusion_models`` / ``text_encoders``.
    """
    listings: dict[str, list[str]] = {}
    for folder in dict.fromkeys(f.folder for f in files):
        listings[folder] = list(list_folder(folder))

    missing = [f for f in files if f.name not in listings[f.folder]]
    if not missing:
        logger.debug("ComfyUI lists all %d model files", len(files))
        return
    raise ModelsMissing(subject + _missing_message(settings, missing, listings))


def on_volume(settings: ComfySettings, f: ModelFile) -> Path | None:
    """Where ComfyUI finds ``f`` on the volume (the first searched folder that holds it), or None."""
    return next((d / f.name for d in searched_dirs(settings, f.folder) if (d / f.name).is_file()), None)


def find_model(settings: ComfySettings, f: ModelFile) -> Path | None:
    """The file ComfyUI loads for ``f``: in the first of :func:`model_dirs` that holds it, or None."""
    return next((d / f.name for d in model_dirs(settings, f.folder) if (d / f.name).is_file()), None)


def missing_files(settings: ComfySettings, files: Sequence[ModelFile]) -> list[ModelFile]:
    """The files in no folder ComfyUI searches for them (a local look, no ComfyUI)."""
    return [f for f in files if find_model(settings, f) is None]


def cache_places(f: ModelFile) -> list[str]:
    """Where a Hugging Face repository may keep ``f``, for messages."""
    return [layout.format(folder=f.folder, name=f.name) for layout in LAYOUTS]


def scan_volume(settings: ComfySettings, *, limit: int = 50) -> dict[str, list[str] | None]:
    """Model files actually present in each searched volume folder (``None`` = folder missing).

    Keys are the absolute folders; values are paths relative to the folder, ``/``-separated, as
    ComfyUI would list them. Unreadable folders give an empty list; at most ``limit`` per folder.
    """
    result: dict[str, list[str] | None] = {}
    for subdirs in VOLUME_SUBDIRS.values():
        for sub in subdirs:
            root = settings.volume_path / sub
            if not root.is_dir():
                result[str(root)] = None
                continue
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel_dir = os.path.relpath(dirpath, root)
                for name in sorted(filenames):
                    if name.lower().endswith(_MODEL_SUFFIXES):
                        rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                        found.append(rel.replace(os.sep, "/"))
                if len(found) >= limit:
                    found = found[:limit] + ["…"]
                    break
            result[str(root)] = found
    return result


def describe_volume(settings: ComfySettings) -> str:
    """What is on the volume's model folders, one line per folder (for the boot log and errors)."""
    volume = settings.volume_path
    if not volume.exists():
        return f"volume {volume} does not exist (no network volume attached, or VOLUME_PATH is wrong)"
    if not volume.is_dir():
        return f"volume {volume} is not a directory"
    lines = [f"volume {volume}:"]
    for folder, files in scan_volume(settings).items():
        if files is None:
            lines.append(f"  {folder}: (missing)")
        elif not files:
            lines.append(f"  {folder}: (no model files)")
        else:
            lines.append(f"  {folder}: {', '.join(files)}")
    return "\n".join(lines)


def _missing_message(settings: ComfySettings, missing: list[ModelFile], listings: dict[str, list[str]]) -> str:
    count = len(missing)
    head = f"{count} model file{'s' if count != 1 else ''} not found by ComfyUI"
    if settings.attached:
        head += f" at {settings.base_url} (it uses its own model paths; the worker expected the volume layout below)"
    parts = [head + ":"]
    for f in missing:
        dirs = searched_dirs(settings, f.folder)
        where = " or ".join(str(d / f.name) for d in dirs)
        setting = f" ({f.setting})" if f.setting else ""
        line = f"- {f.label} {f.name!r}{setting}: expected at {where}; searched {', '.join(map(str, dirs))}"
        if not settings.attached:
            line += f"; not in the Hugging Face cache {settings.hf_cache_dir} either ({_cache_scope(settings)}: {', '.join(cache_places(f))})"
        hints = _same_base_name(settings, f, listings)
        if hints:
            line += (
                f". ComfyUI lists a file of the same name as {'; '.join(hints)}: "
                "move it to the expected place" + (f", or set {f.setting} to that name" if f.setting else "")
            )
        parts.append(line)
    if not settings.volume_path.is_dir():
        parts.append(
            f"The volume {settings.volume_path} does not exist: is a network volume attached to this endpoint?"
        )
    return "\n".join(parts)


def _cache_scope(settings: ComfySettings) -> str:
    return f"MODEL_REPO={settings.model_repo}" if settings.model_repo else "any repository"


def _same_base_name(settings: ComfySettings, f: ModelFile, listings: dict[str, list[str]]) -> list[str]:
    """Where a file with ``f``'s base name is listed instead (the usual mistake: wrong subfolder)."""
    base = posixpath.basename(f.name.replace("\\", "/"))
    hints = []
    for folder, names in listings.items():
        for name in names:
            if (folder == f.folder and name == f.name) or posixpath.basename(name.replace("\\", "/")) != base:
                continue
            on_volume = [d / name for d in searched_dirs(settings, folder) if (d / name).exists()]
            hint = f"{name!r} in {folder}"
            if on_volume:
                hint += f" ({on_volume[0]})"
            hints.append(hint)
    return hints


def _yaml_scalar(value: str) -> str:
    """A YAML scalar for ``value``: plain when safe, else double-quoted (JSON is valid YAML there)."""
    if _PLAIN_SCALAR.match(value):
        return value
    return json.dumps(value, ensure_ascii=False)
