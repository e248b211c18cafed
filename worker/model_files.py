"""Model files checked before use: a ``.safetensors`` file must hold all the data its header declares.

:func:`comfy_bootstrap.models.check_models` asks ComfyUI whether it lists each file by name. A file
cut short by an interrupted download, or an HTML error page saved under the model's name, passes
that check and fails much later inside ComfyUI's loader, after the job waited for it. The
safetensors format says in its first bytes how big the file must be: an 8-byte little-endian
header length, a JSON header giving each tensor's byte range (``data_offsets``, counted from the
end of the header), then the tensors' bytes. Reading those few kilobytes tells whether the file
holds what it declares. Results are kept per (path, size, mtime), so a warm worker reads each
header once and a file that changed is read again.

Only the standard library is used: the worker has no ``safetensors`` package.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.models import ModelFile, on_volume
from worker.errors import ModelsInvalid

log = logging.getLogger(__name__)

#: Name endings of safetensors files (ComfyUI also loads ``.sft`` as safetensors); others are not checked.
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
#: The largest header the safetensors library accepts (its ``MAX_HEADER_SIZE``).
HEADER_LIMIT = 100_000_000
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class Header:
    """What a safetensors file's first bytes declare: its header's length and the tensor data's size."""

    length: int
    data: int

    @property
    def file_size(self) -> int:
        """The size the whole file must have."""
        return _LENGTH.size + self.length + self.data


def read_header(path: Path) -> Header | str:
    """The header of the safetensors file at ``path``, or what keeps it from being read.

    Needs only the file's start: a file cut short after its header still gives its header.
    """
    size = path.stat().st_size
    if size < _LENGTH.size:
        return f"the file is {human_size(size)}, too short for a safetensors file (an empty or cut-off download)"
    with path.open("rb") as f:
        head = f.read(_LENGTH.size)
        (length,) = _LENGTH.unpack(head)
        if length < 2 or length > HEADER_LIMIT:
            return _not_safetensors(head + f.read(64), f"its first 8 bytes give a header length of {length:,} bytes")
        if _LENGTH.size + length > size:
            return (
                f"the file ends inside its header (a header of {human_size(length)}, the file holds {human_size(size)}): "
                "the download was cut short"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "not a safetensors file: its header is not JSON"
    if not isinstance(header, dict):
        return "not a safetensors file: its header is not a JSON object"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not _valid_offsets(offsets):
            return f"not a valid safetensors file: tensor {name!r} has no valid data_offsets ({offsets!r})"
        end = max(end, offsets[1])
    return Header(length, end)


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with the safetensors file at ``path``, or None when it holds what its header declares."""
    header = read_header(path)
    if isinstance(header, str):
        return header
    held = path.stat().st_size - _LENGTH.size - header.length
    if held < header.data:
        return (
            f"the header declares {human_size(header.data)} of tensor data but the file holds {human_size(held)}: "
            f"{human_size(header.data - held)} missing — the download was cut short"
        )
    if held > header.data:
        return (
            f"the file holds {human_size(held - header.data)} more than the {human_size(header.data)} of tensor data "
            "its header declares (written twice, or another file appended)"
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

    Files not named ``.safetensors`` (``.gguf``, ``.pt``, …) are not checked, nor files that are not
    on the volume: ComfyUI lists them from elsewhere (an attached ComfyUI's own model folders).
    """
    problems: list[tuple[ModelFile, Path, str]] = []
    for file in files:
        if not file.name.lower().endswith(SAFETENSORS_SUFFIXES):
            continue
        path = on_volume(comfy, file)
        if path is None:
            log.debug("%s %r is not on the volume %s: its header is not checked", file.label, file.name, comfy.volume_path)
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


def _valid_offsets(offsets: object) -> bool:
    """``[begin, end]``: two integers, ``0 <= begin <= end``."""
    return (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(type(o) is int for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    )


def _not_safetensors(head: bytes, why: str) -> str:
    """The message for a file that is not safetensors at all, quoting its start when it is text."""
    text = head.decode("utf-8", "replace")
    printable = "".join(c for c in text if c.isprintable() or c in "\n\t").strip()
    if len(printable) >= 0.9 * len(text) and printable:
        start = " ".join(printable.split())[:40]
        web_page = start.lower().startswith(("<!doctype", "<html", "<?xml"))
        kind = "a web page (an error or sign-in page)" if web_page else "text"
        return f"not a safetensors file: it starts with {start!r}, {kind} saved under the model's name (a failed download)"
    return f"not a safetensors file: {why}"


def human_size(count: int) -> str:
    """Bytes for a message: exact when small, else in decimal units as the Hub shows them."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes" if count != 1 else "1 byte"
