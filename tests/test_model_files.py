"""worker/model_files.py: the safetensors header check that runs before a job uses its model files."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.models import ModelFile, on_volume
from worker import model_files
from worker.errors import ModelsInvalid, WorkerError
from worker.model_files import HeaderCache, check_model_files, safetensors_problem

EXPERT = ModelFile("diffusion_models", "expert.safetensors", "high-noise diffusion model", "MODEL_HIGH_NOISE")
LORA = ModelFile("loras", "wan/lora.safetensors", "step-distill LoRA", "MODEL_LORA")


def safetensors_bytes(tensors: dict[str, int], *, metadata: dict[str, str] | None = None) -> bytes:
    """A valid safetensors file: one U8 tensor of ``size`` bytes per name, back to back."""
    header: dict[str, object] = {}
    offset = 0
    for name, size in tensors.items():
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    if metadata is not None:
        header["__metadata__"] = metadata
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + os.urandom(offset)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def comfy(tmp_path: Path) -> ComfySettings:
    return ComfySettings(volume_path=tmp_path / "volume")


@pytest.fixture
def expert(comfy: ComfySettings) -> Path:
    data = safetensors_bytes({"blocks.0.weight": 3000, "blocks.1.weight": 1000}, metadata={"format": "pt"})
    return write(comfy.volume_path / "models/diffusion_models/expert.safetensors", data)


# ---- the header check ------------------------------------------------------------------------------
def test_a_complete_file_passes(expert: Path) -> None:
    assert safetensors_problem(expert) is None


def test_a_file_with_no_tensors_passes(tmp_path: Path) -> None:
    assert safetensors_problem(write(tmp_path / "empty.safetensors", safetensors_bytes({}))) is None


@pytest.mark.parametrize("cut", [1, 1000, 3999])
def test_a_truncated_file_says_how_much_is_missing(expert: Path, cut: int) -> None:
    data = expert.read_bytes()
    expert.write_bytes(data[:-cut])
    problem = safetensors_problem(expert)
    assert problem is not None
    assert "the header declares 4.0 KB of tensor data" in problem
    assert f"{model_files.human_size(cut)} missing — the download was cut short" in problem


def test_a_file_cut_inside_its_header(expert: Path) -> None:
    expert.write_bytes(expert.read_bytes()[:20])
    assert "the file ends inside its header" in safetensors_problem(expert)


def test_an_absurd_header_length(tmp_path: Path) -> None:
    path = write(tmp_path / "x.safetensors", struct.pack("<Q", 2**62) + b"\x00" * 100)
    assert (
        safetensors_problem(path)
        == "not a safetensors file: its first 8 bytes give a header length of 4,611,686,018,427,387,904 bytes"
    )


def test_a_header_that_is_not_json(tmp_path: Path) -> None:
    path = write(tmp_path / "x.safetensors", struct.pack("<Q", 16) + b"\x00\x01binary\xff\xfe garbage" + b"\x00" * 64)
    assert safetensors_problem(path) == "not a safetensors file: its header is not JSON"


def test_a_header_that_is_not_an_object(tmp_path: Path) -> None:
    path = write(tmp_path / "x.safetensors", struct.pack("<Q", 8) + b"[1, 2]  ")
    assert safetensors_problem(path) == "not a safetensors file: its header is not a JSON object"


def test_offsets_beyond_the_file(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F16", "shape": [1], "data_offsets": [0, 14_300_000_000]}}).encode()
    path = write(tmp_path / "x.safetensors", struct.pack("<Q", len(header)) + header + bytes(9_800))
    assert safetensors_problem(path) == (
        "the header declares 14.3 GB of tensor data but the file holds 9.8 KB: 14.3 GB missing — the download was cut short"
    )


@pytest.mark.parametrize("offsets", [[10, 5], [-1, 4], [0], "0-4", [0, 4.0], None])
def test_malformed_offsets(tmp_path: Path, offsets: object) -> None:
    header = json.dumps({"w": {"dtype": "U8", "shape": [4], "data_offsets": offsets}}).encode()
    path = write(tmp_path / "x.safetensors", struct.pack("<Q", len(header)) + header + bytes(16))
    assert "tensor 'w' has no valid data_offsets" in safetensors_problem(path)


def test_a_file_longer_than_its_header_declares(expert: Path) -> None:
    expert.write_bytes(expert.read_bytes() + bytes(2500))
    assert safetensors_problem(expert) == (
        "the file holds 2.5 KB more than the 4.0 KB of tensor data its header declares (written twice, or another file appended)"
    )


def test_a_zero_byte_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.safetensors", b"")
    assert safetensors_problem(path) == "the file is 0 bytes, too short for a safetensors file (an empty or cut-off download)"


def test_an_html_page_saved_under_the_name(tmp_path: Path) -> None:
    page = b"<!DOCTYPE html>\n<html>\n<head><title>Hugging Face - Sign in</title></head><body>" + b"x" * 4000
    problem = safetensors_problem(write(tmp_path / "x.safetensors", page))
    assert problem.startswith("not a safetensors file: it starts with '<!DOCTYPE html> <html> <head><title>Hugg'")
    assert "a web page (an error or sign-in page) saved under the model's name (a failed download)" in problem


def test_a_short_text_answer_saved_under_the_name(tmp_path: Path) -> None:
    problem = safetensors_problem(write(tmp_path / "x.safetensors", b"Entry not found"))
    assert (
        problem
        == "not a safetensors file: it starts with 'Entry not found', text saved under the model's name (a failed download)"
    )


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
    assert cache.problem(expert) == "not a safetensors file: its header is not JSON"
    assert len(reads) == 4


# ---- a task's files --------------------------------------------------------------------------------
def test_a_tasks_good_files_pass(comfy: ComfySettings, expert: Path) -> None:
    write(comfy.volume_path / "models/loras/wan/lora.safetensors", safetensors_bytes({"a.lora_down.weight": 64}))
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
    with pytest.raises(ModelsInvalid, match="'expert.safetensors' .* it starts with '<html>Not Found</html>', a web page"):
        check_model_files(attached, "t2v", [EXPERT], cache=HeaderCache())


def test_a_file_is_found_in_the_legacy_folder_and_the_first_folder_wins(comfy: ComfySettings) -> None:
    unet = write(comfy.volume_path / "models/unet/expert.safetensors", b"")
    assert on_volume(comfy, EXPERT) == unet
    with pytest.raises(ModelsInvalid, match="models/unet/expert.safetensors"):
        check_model_files(comfy, "i2v", [EXPERT], cache=HeaderCache())
    first = write(comfy.volume_path / "models/diffusion_models/expert.safetensors", safetensors_bytes({"w": 8}))
    assert on_volume(comfy, EXPERT) == first
    check_model_files(comfy, "i2v", [EXPERT], cache=HeaderCache())


def test_an_unreadable_file_is_reported(comfy: ComfySettings, expert: Path, monkeypatch) -> None:
    def refuse(path: Path) -> str | None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(model_files, "safetensors_problem", refuse)
    with pytest.raises(ModelsInvalid, match=r"cannot be read \(Permission denied\)"):
        check_model_files(comfy, "i2v", [EXPERT], cache=HeaderCache())


def test_the_header_of_a_cut_short_file_still_gives_the_whole_files_size(expert: Path) -> None:
    """What scripts/models.py uses to tell an interrupted download from another file."""
    size = expert.stat().st_size
    expert.write_bytes(expert.read_bytes()[:600])
    header = model_files.read_header(expert)
    assert isinstance(header, model_files.Header) and header.file_size == size and header.data == 4000
    expert.write_bytes(b"<html></html>")
    assert isinstance(model_files.read_header(expert), str)
