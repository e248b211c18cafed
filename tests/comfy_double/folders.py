"""ComfyUI's folders: input/output/temp/user directories and the model search paths.

Mirrors ``folder_paths`` + ``utils/extra_config.py`` of ComfyUI: every model folder name has an
ordered list of search paths and a set of accepted extensions; ``extra_model_paths.yaml`` adds paths
(``unet``/``clip`` are legacy names of ``diffusion_models``/``text_encoders``). Listings are computed
from the disk at every call, because ComfyUI sees a model file added or removed while it runs at once
(``models_endpoints.json``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import recordings

logger = logging.getLogger(__name__)

#: ``folder_paths.supported_pt_extensions``.
MODEL_EXTENSIONS: frozenset[str] = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

#: ``folder_paths.map_legacy``: old folder names still accepted in extra_model_paths.yaml.
LEGACY_FOLDER_NAMES: dict[str, str] = {"unet": "diffusion_models", "clip": "text_encoders"}

#: Default paths (relative to ``<base>/models``) that differ from ``models/<name>``.
_DEFAULT_SUBDIRS: dict[str, list[str]] = {
    "text_encoders": ["text_encoders", "clip"],
    "diffusion_models": ["unet", "diffusion_models"],
    "controlnet": ["controlnet", "t2i_adapter"],
}

#: Extension sets that differ from :data:`MODEL_EXTENSIONS` (an empty set accepts every file).
_SPECIAL_EXTENSIONS: dict[str, frozenset[str]] = {
    "configs": frozenset({".yaml"}),
    "diffusers": frozenset({"folder"}),
    "custom_nodes": frozenset(),
    "VHS_video_formats": frozenset({".json"}),
}


@dataclass
class ModelFolder:
    """One entry of ``folder_names_and_paths``: search paths in order, accepted extensions."""

    paths: list[Path]
    extensions: frozenset[str]


@dataclass
class Folders:
    """All directories the double reads and writes, resolved to absolute paths."""

    base_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    user_dir: Path
    model_folders: dict[str, ModelFolder] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        base_dir: Path,
        *,
        input_dir: Path | None = None,
        output_dir: Path | None = None,
        temp_dir: Path | None = None,
        user_dir: Path | None = None,
    ) -> Folders:
        """ComfyUI's defaults under ``base_dir`` (``input/``, ``output/``, ``models/<name>``...)."""
        base = Path(os.path.abspath(base_dir))
        folders = cls(
            base_dir=base,
            input_dir=Path(os.path.abspath(input_dir or base / "input")),
            output_dir=Path(os.path.abspath(output_dir or base / "output")),
            temp_dir=Path(os.path.abspath(temp_dir or base / "temp")),
            user_dir=Path(os.path.abspath(user_dir or base / "user")),
        )
        models = base / "models"
        for name in recordings.model_folder_names():
            if name == "custom_nodes":
                paths = [base / "custom_nodes"]
            elif name == "VHS_video_formats":
                paths = []
            else:
                paths = [models / sub for sub in _DEFAULT_SUBDIRS.get(name, [name])]
            folders.model_folders[name] = ModelFolder(paths=paths, extensions=_SPECIAL_EXTENSIONS.get(name, MODEL_EXTENSIONS))
        return folders

    def ensure_io_dirs(self) -> None:
        """Create input/output/temp (ComfyUI creates them at start)."""
        for path in (self.input_dir, self.output_dir, self.temp_dir):
            path.mkdir(parents=True, exist_ok=True)

    # -- model folders -------------------------------------------------------------------------

    def add_model_path(self, folder_name: str, path: Path, *, is_default: bool = False) -> None:
        """``folder_paths.add_model_folder_path``: legacy names mapped, duplicates not repeated."""
        name = LEGACY_FOLDER_NAMES.get(folder_name, folder_name)
        path = Path(os.path.normpath(path))
        folder = self.model_folders.get(name)
        if folder is None:
            self.model_folders[name] = ModelFolder(paths=[path], extensions=frozenset())
            return
        if path in folder.paths:
            if is_default:
                folder.paths.remove(path)
                folder.paths.insert(0, path)
            return
        if is_default:
            folder.paths.insert(0, path)
        else:
            folder.paths.append(path)

    def folder_names(self) -> list[str]:
        """What ``GET /models`` lists: every known folder name, in registration order."""
        return list(self.model_folders)

    def list_models(self, folder_name: str) -> list[str] | None:
        """``folder_paths.get_filename_list``: sorted relative paths (``sub/name``), or None if unknown."""
        folder = self.model_folders.get(folder_name)
        if folder is None:
            return None
        found: set[str] = set()
        for root in folder.paths:
            for rel in _walk_files(root):
                if not folder.extensions or os.path.splitext(rel)[1].lower() in folder.extensions:
                    found.add(rel)
        return sorted(found)

    def find_model(self, folder_name: str, filename: str) -> Path | None:
        """``folder_paths.get_full_path``: the first search path holding the file, else None."""
        folder = self.model_folders.get(LEGACY_FOLDER_NAMES.get(folder_name, folder_name))
        if folder is None:
            return None
        relative = os.path.relpath(os.path.join("/", filename), "/")
        for root in folder.paths:
            candidate = root / relative
            if candidate.is_file():
                return candidate
        return None

    # -- input/output/temp -----------------------------------------------------------------------

    def directory_by_type(self, kind: str | None) -> Path | None:
        """``folder_paths.get_directory_by_type``: input/output/temp, else None."""
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind or "")

    def annotated_path(self, name: str, default_dir: Path | None = None) -> Path:
        """``folder_paths.get_annotated_filepath``: ``"x.png [output]"`` selects the directory."""
        base = default_dir or self.input_dir
        for suffix, directory in (
            (" [output]", self.output_dir),
            (" [input]", self.input_dir),
            (" [temp]", self.temp_dir),
        ):
            if name.endswith(suffix):
                return directory / name[: -len(suffix)]
        return base / name

    def input_files(self, listed: Callable[[str], bool]) -> list[str]:
        """A loader's COMBO list: the files at the top of the input folder it lists, sorted."""
        try:
            names = [e.name for e in os.scandir(self.input_dir) if e.is_file()]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if listed(n))

    def snapshot(self) -> dict[str, list[str]]:
        """Files currently in input/output/temp (relative, sorted): lets tests check clean-up."""
        return {
            "input": sorted(_walk_files(self.input_dir)),
            "output": sorted(_walk_files(self.output_dir)),
            "temp": sorted(_walk_files(self.temp_dir)),
        }


def _walk_files(root: Path) -> Iterable[str]:
    """Relative paths (with ``/``) of every file below ``root``; ``.git`` skipped like ComfyUI."""
    if not root.is_dir():
        return []
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            rel = os.path.relpath(os.path.join(dirpath, filename), root)
            out.append(rel.replace(os.sep, "/"))
    return out


def load_extra_model_paths(folders: Folders, yaml_path: Path) -> list[tuple[str, Path]]:
    """Parse one ``extra_model_paths.yaml`` like ``utils/extra_config.load_extra_path_config``.

    Each top-level section may have ``base_path`` (``~``/env vars expanded, relative to the YAML's
    folder) and ``is_default``; every other key is a folder name whose value holds one path per line.
    A missing file raises (ComfyUI then dies at boot with a traceback).
    """
    with open(yaml_path, encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    yaml_dir = os.path.dirname(os.path.abspath(yaml_path))
    added: list[tuple[str, Path]] = []
    for section in (config or {}).values():
        if section is None:
            continue
        section = dict(section)
        base_path = section.pop("base_path", None)
        if base_path is not None:
            base_path = os.path.expandvars(os.path.expanduser(str(base_path)))
            if not os.path.isabs(base_path):
                base_path = os.path.abspath(os.path.join(yaml_dir, base_path))
        is_default = bool(section.pop("is_default", False))
        for folder_name, value in section.items():
            for line in str(value).split("\n"):
                if not line:
                    continue
                if base_path:
                    full = os.path.join(base_path, line)
                elif not os.path.isabs(line):
                    full = os.path.abspath(os.path.join(yaml_dir, line))
                else:
                    full = line
                normalized = Path(os.path.normpath(full))
                logger.info("Adding extra search path %s %s", folder_name, normalized)
                folders.add_model_path(folder_name, normalized, is_default=is_default)
                added.append((folder_name, normalized))
    return added


def volume_model_paths(models_root: Path) -> dict[str, list[Path]]:
    """The folders the worker's extra_model_paths.yaml registers for ``<volume>/models``
    (``comfy_bootstrap/models.py``)."""
    root = Path(models_root)
    return {
        "diffusion_models": [root / "diffusion_models", root / "unet"],
        "text_encoders": [root / "text_encoders", root / "clip"],
        "vae": [root / "vae"],
        "loras": [root / "loras"],
        "audio_encoders": [root / "audio_encoders"],
        "clip_vision": [root / "clip_vision"],
        "frame_interpolation": [root / "frame_interpolation"],
        "checkpoints": [root / "checkpoints"],
    }


def apply_model_paths(folders: Folders, model_paths: Mapping[str, Sequence[Path]]) -> None:
    """Register explicit ``{folder_name: [paths]}`` (in-process mode) after ComfyUI's defaults."""
    for name, paths in model_paths.items():
        for path in paths:
            folders.add_model_path(name, Path(os.path.abspath(path)))
