"""worker/model_files.py: the safetensors header check that runs before a job uses its model files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.models import ModelFile, on_volume
from tests.test_safetensors import raw_file, safetensors_file
from worker import model_files
from worker.errors import ModelsInvalid, WorkerError
from worker.model_files import HeaderCache, check_model_files, safetensors_problem

EXPERT = ModelFile("diffusion_models", "expert.safetensors", "high-noise diffusion model", "MODEL_HIGH_NOISE")
LORA = ModelFile("loras", "wan/lora.safetensors", "step-distill LoRA", "MODEL_LORA")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def comfy(tmp_path: Path) -> ComfySettings:
    return ComfySettings(volume_path=tmp_path / "volume")


@pytest.fixture
def expert(comfy: ComfySettings) -> Path:
    data = safetensors_file({"blocks.0.weight": (1500,), "blocks.1.weight": (500,)}, metadata={"format": "pt"})
    return write(comfy.volume_path / "models/diffusion_models/expert.safetensors", data)


# ---- the header check ------------------------------------------------------------------------------
def test_a_complete_file_passes(expert: Path) -> None:
    assert safetensors_problem(expert) is None


def test_a_file_with_no_tensors_passes(tmp_path: Path) -> None:
    assert safetensors_problem(write(tmp_path / "empty.safetensors", safetensors_file({}))) is None


@pytest.mark.parametrize("cut", [1, 1000, 3999])
def test_a_truncated_file_says_how_much_is_missing(expert: Path, cut: int) -> None:
    data = expert.read_bytes()
    expert.write_bytes(data[:-cut])
    problem = safetensors_problem(expert)
    assert problem is not None
    assert "the header declares 4.0 KB of tensor data" in problem
    assert f"{model_files.human_size(cut)} missing — the download was cut short" in problem


def test_offsets_beyond_the_file(tmp_path: Path) -> None:
    header = {"w": {"dtype": "U8", "shape": [14_300_000_000], "data_offsets": [0, 14_300_000_000]}}
    path = write(tmp_path / "x.safetensors", raw_file(header, bytes(9_800)))
    assert safetensors_problem(path) == (
        "the header declares 14.3 GB of tensor data but the file holds 9.8 KB: 14.3 GB missing — the download was cut short"
    )


def test_a_file_longer_than_its_header_declares(expert: Path) -> None:
    expert.write_bytes(expert.read_bytes() + bytes(2500))
    assert safetensors_problem(expert) == (
        "the file holds 2.5 KB more than the 4.0 KB of tensor data its header declares (written twice, or another file appended)"
    )


def test_a_header_the_loader_would_refuse_is_named(tmp_path: Path) -> None:
    header = {"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 4]}}
    path = write(tmp_path / "x.safetensors", raw_file(header, bytes(4)))
    assert safetensors_problem(path) == "a damaged safetensors file: tensor 'w' holds 4 bytes, but F16 [4] needs 8"


def test_the_double_stand_ins_pass(tmp_path: Path) -> None:
    from tests.comfy_double import create_model_files
    from tests.comfy_double.inprocess import ALL_MODEL_FILES

    for path in create_model_files(tmp_path / "models", ALL_MODEL_FILES):
        assert safetensors_problem(path) is None, path


# ---- the cache -------------------------------------------------------------------------------------
def test_the_cache_reads_a_header_once_and_again_after_a_change(expert: Path, monkeypatch) -> None:
    reads: list[Path] = []
    real = model_files.safetensors_problem
    monkeypatch.setattr(model_files, "safetensors_problem", lambda path: reads.append(path) or real(path))
    cache = HeaderCache()
    good = expert.read_bytes()
    assert cache.problem(expert) is None and cache.problem(expert) is None
    assert reads == [expert]

    expert.write_bytes(good[:-100])  # truncated: another size
    assert "100 bytes missing" in cache.problem(expert)
    assert "100 bytes missing" in cache.problem(expert)
    assert len(reads) == 2

    expert.write_bytes(good)  # fixed
    assert cache.problem(expert) is None
    assert len(reads) == 3

    stat = expert.stat()
    expert.write_bytes(good[:8] + b"[" + good[9:])  # same size, new content: only the mtime tells
    os.utime(expert, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.problem(expert) == "not a safetensors file (the JSON header does not follow the 8-byte length)"
    assert len(reads) == 4


# ---- a task's files --------------------------------------------------------------------------------
def test_a_tasks_good_files_pass(comfy: ComfySettings, expert: Path) -> None:
    write(comfy.volume_path / "models/loras/wan/lora.safetensors", safetensors_file({"a.lora_down.weight": (32,)}))
    check_model_files(comfy, "i2v", [EXPERT, LORA], cache=HeaderCache())


def test_an_invalid_file_names_the_task_file_path_amount_and_the_fix(comfy: ComfySettings, expert: Path) -> None:
    expert.write_bytes(expert.read_bytes()[:-1500])
    lora = write(comfy.volume_path / "models/loras/wan/lora.safetensors", b"")
    with pytest.raises(ModelsInvalid) as info:
        check_model_files(comfy, "i2v", [EXPERT, LORA], cache=HeaderCache())
    assert isinstance(info.value, WorkerError)
    assert info.value.code == "models_invalid" and not info.value.refresh_worker
    assert str(info.value).splitlines() == [
        "task i2v: 2 model files on the volume cannot be used:",
        f"- high-noise diffusion model 'expert.safetensors' (MODEL_HIGH_NOISE) at {expert}: the header declares "
        "4.0 KB of tensor data but the file holds 2.5 KB: 1.5 KB missing — the download was cut short",
        f"- step-distill LoRA 'wan/lora.safetensors' (MODEL_LORA) at {lora}: the file is 0 bytes, too short for a "
        "safetensors file (an empty or cut-off download)",
        "Download them again and check the SHA-256 against the Hub; "
        f"run: python scripts/models.py --task i2v --volume {comfy.volume_path}",
    ]


def test_files_that_are_not_safetensors_are_not_checked(comfy: ComfySettings) -> None:
    gguf = ModelFile("diffusion_models", "expert-Q8_0.gguf", "expert")
    pt = ModelFile("vae", "vae.pt", "VAE")
    write(comfy.volume_path / "models/diffusion_models/expert-Q8_0.gguf", b"GGUF" + os.urandom(100))
    write(comfy.volume_path / "models/vae/vae.pt", b"")
    check_model_files(comfy, "i2v", [gguf, pt], cache=HeaderCache())


def test_files_not_on_the_volume_are_not_checked(tmp_path: Path) -> None:
    """An attached ComfyUI (COMFY_URL) lists files from its own folders: there is nothing to read here."""
    attached = ComfySettings(url="http://127.0.0.1:9", volume_path=tmp_path / "no-volume")
    check_model_files(attached, "i2v", [EXPERT, LORA], cache=HeaderCache())


def test_an_attached_comfyui_still_gets_files_on_the_volume_checked(tmp_path: Path) -> None:
    attached = ComfySettings(url="http://127.0.0.1:9", volume_path=tmp_path / "volume")
    write(attached.volume_path / "models/diffusion_models/expert.safetensors", b"<html>Not Found</html>")
    with pytest.raises(ModelsInvalid, match="'expert.safetensors' .*: an HTML page, .*: it starts with '<html>Not Found</html>'"):
        check_model_files(attached, "t2v", [EXPERT], cache=HeaderCache())


def test_a_file_is_found_in_the_legacy_folder_and_the_first_folder_wins(comfy: ComfySettings) -> None:
    unet = write(comfy.volume_path / "models/unet/expert.safetensors", b"")
    assert on_volume(comfy, EXPERT) == unet
    with pytest.raises(ModelsInvalid, match="models/unet/expert.safetensors"):
        check_model_files(comfy, "i2v", [EXPERT], cache=HeaderCache())
    first = write(comfy.volume_path / "models/diffusion_models/expert.safetensors", safetensors_file({"w": (4,)}))
    assert on_volume(comfy, EXPERT) == first
    check_model_files(comfy, "i2v", [EXPERT], cache=HeaderCache())


def test_an_unreadable_file_is_reported(comfy: ComfySettings, expert: Path, monkeypatch) -> None:
    def refuse(path: Path) -> str | None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(model_files, "safetensors_problem", refuse)
    with pytest.raises(ModelsInvalid, match=r"cannot be read \(Permission denied\)"):
        check_model_files(comfy, "i2v", [EXPERT], cache=HeaderCache())
