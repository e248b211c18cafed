"""The served tasks' model files from RunPod's cached model, linked where ComfyUI looks first.

An endpoint may name a Hugging Face repository as its cached model; RunPod puts it, read-only, in
a Hugging Face cache under the volume's path before the worker starts (docs/deployment.md, "Cached
models"). At boot the worker looks there for every file a served task loads (any speed), links
each one found into ``<WORKER_DIR>/model-links/<folder>/<name>`` and puts those folders first in
ComfyUI's search order, ahead of the network volume's ``models/``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from comfy_bootstrap import hf_cache
from comfy_bootstrap.models import ModelFile
from worker.settings import Settings
from worker.tasks import REGISTRY

log = logging.getLogger(__name__)


def sought_files(settings: Settings) -> list[hf_cache.Sought]:
    """Every file a served task may load, once, with the name the worker is configured to use."""
    sought: dict[tuple[str, str], hf_cache.Sought] = {}
    for task in settings.tasks:
        for spec in REGISTRY[task].all_specs:
            file = ModelFile(spec.folder, settings.model_names[spec.env], spec.label, spec.env)
            published = (spec.source.repo, spec.source.path) if spec.source else None
            sought.setdefault((file.folder, file.name), hf_cache.Sought(file, published))
    return list(sought.values())


def search_cache(settings: Settings) -> hf_cache.CacheSearch:
    comfy = settings.comfy
    pin = hf_cache.RepoPin.parse(comfy.model_repo) if comfy.model_repo else None
    return hf_cache.search(comfy.hf_cache_dir, sought_files(settings), pin)


def link_cached_models(settings: Settings) -> Settings:
    """The settings with the cache's files linked in the first folders ComfyUI searches; the boot
    log says where each file was found or looked for. An attached ComfyUI keeps its own folders."""
    comfy = settings.comfy
    if comfy.attached:
        return settings
    result = search_cache(settings)
    log.info("%s", hf_cache.describe(result))
    try:  # also when nothing was found: the links of an earlier boot go
        folders = hf_cache.link(result.found, comfy.model_links_dir)
    except OSError as exc:
        log.error("cannot link the cached model's files into %s: %s; ComfyUI will not see them", comfy.model_links_dir, exc)
        return settings
    return replace(settings, comfy=replace(comfy, extra_model_dirs=(*folders, *comfy.extra_model_dirs)))
