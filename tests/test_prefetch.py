"""PREFETCH_MODELS: the task's files read in parallel ranges, a missing file skipped, nothing failing."""

from __future__ import annotations

import logging
from pathlib import Path

from tests.comfy_double.inprocess import ALL_MODEL_FILES
from tests.harness import make_volume
from worker.prefetch import CHUNK, prefetch, start_prefetch
from worker.preflight import model_paths
from worker.settings import Settings


def test_every_byte_of_every_file_is_read_once(tmp_path: Path) -> None:
    sizes = [0, 1, CHUNK - 1, CHUNK * 2 + 5]
    paths = []
    for n, size in enumerate(sizes):
        paths.append(tmp_path / f"m{n}.safetensors")
        paths[-1].write_bytes(b"x" * size)
    total, seconds = prefetch(paths, readers=3)
    assert total == sum(sizes) and seconds >= 0


def test_a_missing_file_is_logged_and_skipped(tmp_path: Path, caplog) -> None:
    present = tmp_path / "a.safetensors"
    present.write_bytes(b"y" * 1000)
    with caplog.at_level(logging.WARNING):
        thread = start_prefetch([tmp_path / "gone.safetensors", present])
        thread.join(10)
    assert "prefetch: cannot read" in caplog.text and "gone.safetensors" in caplog.text


def test_the_warmup_tasks_files_are_found_where_comfyui_loads_them(tmp_path: Path) -> None:
    settings = Settings.from_env({"VOLUME_PATH": str(make_volume(tmp_path))})
    paths = model_paths(settings, "i2v")
    assert len(paths) == 5 and all(p.is_file() for p in paths)
    assert {p.relative_to(tmp_path / "runpod-volume" / "models").as_posix() for p in paths} <= set(ALL_MODEL_FILES)
