"""Model files checked before use: a ``.safetensors`` file must hold all the data its header declares.

:func:`comfy_bootstrap.models.check_models` asks ComfyUI whether it lists each file by name. A file
cut short by an interrupted download, or an HTML error page saved under the model's name, passes
that check and fails much later inside ComfyUI's loader, after the job waited for it. The header
(:func:`worker.safetensors.read_header`, a few kilobytes) says how big the file must be. Results are
kept per (path, size, mtime), so a warm worker reads each header once and a file that changed is
read again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.models import ModelFile, find_model
from worker.errors import ModelsInvalid
from worker.safetensors import SUFFIXES, NotSafetensors, read_header

log = logging.getLogger(__name__)


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with the safetensors file at ``path``, or None when it holds what its header declares."""
    try:
        header = read_header(path)
    except NotSafetensors as exc:
        return str(exc)
    data, missing = header.data_bytes, header.file_bytes - path.stat().st_size
    if missing > 0:
        return (
            f"the header declares {human_size(data)} of tensor data but the file holds {human_size(data - missing)}: "
            f"{human_size(missing)} missing — the download was cut short"
        )
    if missing < 0:
        return (
            f"the file holds {human_size(-missing)} more than the {human_size(data)} of tensor data its header "
            "declares (written twice, or another file appended)"
        )
    return None


class HeaderCache:
    """Results of :func:`safetensors_problem` by path, valid while the file's size and mtime stay the same."""

    def __init__(self) -> None:
        self._results: dict[Path, tuple[tuple[int, int], str | None]] = {}
        self._lock = threading.Lock()

    def problem(self, path: Path) -> str | None:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._results.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        result = safetensors_problem(path)
        with self._lock:
            self._results[path] = (key, result)
        return result

    def clear(self) -> None:
        with self._lock:
            self._results.clear()


#: The worker's cache, kept for the life of the process.
CACHE = HeaderCache()


def check_model_files(comfy: ComfySettings, task: str, files: Sequence[ModelFile], *, cache: HeaderCache = CACHE) -> None:
    """Raise :class:`ModelsInvalid` naming every safetensors file of ``task`` that cannot hold what its header declares.

    Checked is the file ComfyUI loads (a cached model's link, else the volume's copy). Files not named
    ``.safetensors`` (``.gguf``, ``.pt``, …) are not checked, nor files in none of the worker's folders:
    ComfyUI lists them from elsewhere (an attached ComfyUI's own model folders).
    """
    problems: list[tuple[ModelFile, Path, str]] = []
    for file in files:
        if not file.name.lower().endswith(SUFFIXES):
            continue
        path = find_model(comfy, file)
        if path is None:
            log.debug("%s %r is in none of the worker's model folders: its header is not checked", file.label, file.name)
            continue
        try:
            problem = cache.problem(path)
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        if problem:
            problems.append((file, path, problem))
    if problems:
        raise ModelsInvalid(_invalid_message(comfy, task, problems))


def _invalid_message(comfy: ComfySettings, task: str, problems: list[tuple[ModelFile, Path, str]]) -> str:
    count = len(problems)
    lines = [f"task {task}: {count} model file{'s' if count != 1 else ''} on the volume cannot be used:"]
    for file, path, problem in problems:
        setting = f" ({file.setting})" if file.setting else ""
        lines.append(f"- {file.label} {file.name!r}{setting} at {path}: {problem}")
    lines.append(
        f"Download {'them' if count != 1 else 'it'} again and check the SHA-256 against the Hub; "
        f"run: python scripts/models.py --task {task} --volume {comfy.volume_path}"
    )
    return "\n".join(lines)


def human_size(count: int) -> str:
    """Bytes for a message: exact when small, else in decimal units as the Hub shows them."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes" if count != 1 else "1 byte"
