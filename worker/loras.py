"""A job's own LoRAs: from a name or a URL to a ComfyUI file, into the task's graph, and checked in ComfyUI's log.

- **By name**: the file must be one ComfyUI lists under ``loras`` (``GET /models/loras``); an
  unknown name is an ``invalid_input`` naming the closest names, before ComfyUI is asked to run.
- **By URL**: :class:`worker.lora_files.LoraCache` fetches, checks and caches it; ComfyUI lists
  the cache folder as a ``loras`` folder of its own (registered in extra_model_paths.yaml).
- **In the graph**: one ``LoraLoaderModelOnly`` per LoRA and model it targets, chained after the
  task's own LoRA (the lightx2v LoRA of each expert; the model itself for one-model tasks).
- **Checked**: a LoRA made for another model is a silent failure in ComfyUI, which only logs
  ``lora key not loaded: <key>`` for each of its tensors it could not place. The job's log lines
  are matched with the LoRA files' tensor names, so the answer's warning names the LoRA.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.models import ModelFile, on_volume
from worker.errors import InvalidInput
from worker.graph import Graph, Template
from worker.lora_files import LoraCache, LoraJob
from worker.request.model import LoraInput
from worker.safetensors import NotSafetensors, read_header
from worker.settings import Settings
from worker.tasks.base import Task

log = logging.getLogger(__name__)

#: ComfyUI's warning for a LoRA tensor it could not match to the model (comfy/lora.py), as logged.
_NOT_LOADED = re.compile(r"lora key not loaded: (\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class AppliedLora:
    """A LoRA of the job as ComfyUI loads it: its request entry, the name ComfyUI lists, the file."""

    given: LoraInput
    comfy_name: str
    path: Path | None

    def describe(self) -> dict[str, object]:
        return self.given.describe()


def register_lora_cache(settings: Settings, cache: LoraCache) -> Settings:
    """The settings with the cache folder among ComfyUI's ``loras`` folders (once)."""
    entry = ("loras", cache.folder)
    if entry in settings.comfy.extra_model_dirs:
        return settings
    return replace(settings, comfy=replace(settings.comfy, extra_model_dirs=(*settings.comfy.extra_model_dirs, entry)))


def resolve(
    loras: Sequence[LoraInput], listed: Callable[[], list[str]], cache: LoraJob, comfy: ComfySettings
) -> list[AppliedLora]:
    """Each LoRA's ComfyUI name: a name checked against ``listed()`` (ComfyUI's ``loras``), a URL fetched."""
    applied, unknown = [], []
    names: list[str] | None = None
    for lora in loras:
        if lora.url is not None:
            name = cache.fetch(lora.url, f"{lora.field}.url")
            applied.append(AppliedLora(lora, name, cache.path(name)))
            continue
        names = names if names is not None else listed()
        if lora.name not in names:
            unknown.append(lora)
            continue
        applied.append(AppliedLora(lora, lora.name, on_volume(comfy, ModelFile("loras", lora.name or ""))))
    if unknown:
        raise InvalidInput("; ".join(_unknown(lora, names or []) for lora in unknown))
    return applied


def _unknown(lora: LoraInput, names: list[str]) -> str:
    close = difflib.get_close_matches(lora.name or "", names, n=3, cutoff=0.5)
    by_base = [n for n in names if n.rsplit("/", 1)[-1] == (lora.name or "").rsplit("/", 1)[-1]]
    suggestions = list(dict.fromkeys(by_base + close))
    hint = f"the closest are {', '.join(repr(n) for n in suggestions)}" if suggestions else f"ComfyUI lists {len(names)} LoRA files"
    return (
        f"{lora.field}.name: {lora.name!r} is not a LoRA file ComfyUI lists; {hint} "
        "(allowed: a file under the volume's models/loras, named as ComfyUI lists it, e.g. dir/name.safetensors; or a url)"
    )


def add_to_graph(graph: Graph, task: Task, fragment: Template, loras: Sequence[AppliedLora]) -> None:
    """Chain a ``LoraLoaderModelOnly`` per LoRA after the roles its target names, in the job's order."""
    last: dict[str, str] = {}  # the role each target role's model now comes out of
    for lora in loras:
        for role in task.lora_targets[lora.given.target]:
            after = last.get(role, role)
            new_role = f"user_lora_{lora.given.index}_{role}"
            graph.insert_after(after, fragment, new_role, "model", lora_name=lora.comfy_name, strength_model=lora.given.strength)
            last[role] = new_role


def warnings_from_log(log_text: str, loras: Sequence[AppliedLora]) -> list[str]:
    """One warning per LoRA some of whose tensors ComfyUI logged as not loaded."""
    missed = set(_NOT_LOADED.findall(_ANSI.sub("", log_text)))
    if not missed:
        return []
    warnings, attributed = [], set()
    for lora, keys in _tensor_names(loras).items():
        hits = missed & keys
        if hits:
            attributed |= hits
            warnings.append(
                f"{lora.given.field} ({_label(lora)}): {len(hits)} of its {len(keys)} tensors did not fit the model and "
                f"were not loaded (e.g. {sorted(hits)[0]}): it was made for another model, so it changes little or nothing"
            )
    if missed - attributed:
        warnings.append(
            f"ComfyUI did not load {len(missed - attributed)} LoRA tensors of this job "
            f"(lora key not loaded, e.g. {sorted(missed - attributed)[0]}): a LoRA does not fit the model"
        )
    return warnings


def _tensor_names(loras: Sequence[AppliedLora]) -> Mapping[AppliedLora, set[str]]:
    names = {}
    for lora in loras:
        if lora.path is None:
            continue
        try:
            names[lora] = set(read_header(lora.path).tensors)
        except (OSError, NotSafetensors) as exc:
            log.debug("cannot read the tensor names of %s: %s", lora.path, exc)
    return names


def _label(lora: AppliedLora) -> str:
    return repr(lora.given.name) if lora.given.name is not None else str(lora.given.describe()["url"])
