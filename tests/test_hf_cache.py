"""comfy_bootstrap/hf_cache.py on real Hugging Face caches: laid out by huggingface_hub itself from
the stand-in Hub (tests/fake_hub.py), read-only as RunPod mounts a cached model, with real symlinks."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfy_bootstrap import hf_cache
from comfy_bootstrap.models import ModelFile
from tests.fake_hub import FakeHub, HubEntry, fill_cache

REPACKAGED = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
VAE = ModelFile("vae", "wan_2.1_vae.safetensors")
EXPERT = ModelFile("diffusion_models", "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors")
LORA = ModelFile("loras", "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors")
FILES = {
    (REPACKAGED, "split_files/vae/wan_2.1_vae.safetensors"): HubEntry(b"repackaged vae"),
    (REPACKAGED, "split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"): HubEntry(b"expert"),
    ("Kijai/WanVideo_comfy", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"): HubEntry(b"lora"),
    ("me/wan22-own", "vae/wan_2.1_vae.safetensors"): HubEntry(b"my own vae"),
    ("me/wan22-own", "diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"): HubEntry(b"my expert"),
}


def read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(dict(FILES)) as server:
        yield server


@pytest.fixture
def cache(hub: FakeHub, tmp_path: Path) -> Iterator[Path]:
    """Every file of FILES in a read-only cache, each repository at the fake Hub's one commit."""
    root = tmp_path / "huggingface-cache" / "hub"
    fill_cache(hub, root, FILES)
    read_only(root)
    yield root
    writable(root)


def sought(file: ModelFile, published: tuple[str, str] | None = None) -> hf_cache.Sought:
    return hf_cache.Sought(file, published)


def test_each_layout_is_found_in_any_repository_with_the_publishers_first(cache: Path) -> None:
    result = hf_cache.search(cache, [
        sought(VAE, (REPACKAGED, "split_files/vae/wan_2.1_vae.safetensors")),
        sought(EXPERT),  # no publisher: the first repository by name that has it
        sought(LORA, ("Kijai/WanVideo_comfy", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors")),
    ])  # fmt: skip
    where = {f.file: (f.snapshot.repo, f.relative, f.path.read_bytes()) for f in result.found}
    assert where == {
        VAE: (REPACKAGED, "split_files/vae/wan_2.1_vae.safetensors", b"repackaged vae"),
        EXPERT: (REPACKAGED, "split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", b"expert"),
        LORA: ("Kijai/WanVideo_comfy", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors", b"lora"),
    }
    assert result.missing == () and [s.branch for s in result.snapshots] == ["main"] * 3


def test_model_repo_pins_one_repository_and_its_flat_layout(cache: Path) -> None:
    pin = hf_cache.RepoPin.parse("me/wan22-own")
    result = hf_cache.search(cache, [sought(VAE, (REPACKAGED, "split_files/vae/wan_2.1_vae.safetensors")), sought(LORA)], pin)
    assert [(f.file, f.relative, f.path.read_bytes()) for f in result.found] == [(VAE, "vae/wan_2.1_vae.safetensors", b"my own vae")]
    assert [s.file for s in result.missing] == [LORA]
    assert [str(s) for s in result.snapshots] == ["me/wan22-own@0123456789ab (main)"]
    text = hf_cache.describe(result)
    assert "  found vae/wan_2.1_vae.safetensors: me/wan22-own/vae/wan_2.1_vae.safetensors" in text
    assert "  not there: loras/wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors (looked for " in text
    assert "split_files/loras/wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors" in text
    absent = hf_cache.search(cache, [sought(VAE)], hf_cache.RepoPin.parse("nobody/else@main"))
    assert absent.found == () and "MODEL_REPO=nobody/else@main is not there (no cached model)" in hf_cache.describe(absent)


def test_refs_main_names_the_revision_and_a_pin_picks_an_older_one(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    path = (REPACKAGED, "split_files/vae/wan_2.1_vae.safetensors")
    fill_cache(hub, cache, [path])
    old = hub.commit
    hub.files[path], hub.commit = HubEntry(b"a newer vae"), "f" * 40
    fill_cache(hub, cache, [path])  # a second snapshot; refs/main now names it
    item = [sought(VAE)]
    assert [f.path.read_bytes() for f in hf_cache.search(cache, item).found] == [b"a newer vae"]
    pinned = hf_cache.search(cache, item, hf_cache.RepoPin.parse(f"{REPACKAGED}@{old}"))
    assert [f.path.read_bytes() for f in pinned.found] == [b"repackaged vae"]
    (cache / hf_cache.repo_folder(REPACKAGED) / "refs" / "main").unlink()  # no ref: every snapshot, by name
    assert [s.revision for s in hf_cache.snapshots(cache)] == [old, "f" * 40]


def test_a_snapshot_link_whose_blob_is_gone_is_not_a_file(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    [link] = fill_cache(hub, cache, [(REPACKAGED, "split_files/vae/wan_2.1_vae.safetensors")])
    Path(os.path.realpath(link)).unlink()  # an interrupted download, or a cleaned blob
    result = hf_cache.search(cache, [sought(VAE)])
    assert result.found == () and [s.file for s in result.missing] == [VAE]
    assert hf_cache.search(tmp_path / "absent", [sought(VAE)]).snapshots == ()


def test_names_that_would_leave_the_snapshot_are_not_looked_up() -> None:
    places = hf_cache.candidates(sought(ModelFile("vae", "../../../../etc/passwd")))
    assert places == ["split_files/vae/passwd", "vae/passwd", "passwd"]  # its base name only
    assert hf_cache.candidates(sought(ModelFile("diffusion_models", "x.safetensors"))) == [
        "split_files/diffusion_models/x.safetensors", "split_files/unet/x.safetensors",
        "diffusion_models/x.safetensors", "unet/x.safetensors", "x.safetensors",
    ]  # fmt: skip


def test_links_are_where_comfyui_looks_and_a_new_boot_replaces_the_last(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "work" / "model-links"
    stale = root / "vae" / "gone.safetensors"
    stale.parent.mkdir(parents=True)
    stale.symlink_to(tmp_path / "nowhere")
    found = hf_cache.search(cache, [sought(VAE), sought(LORA)]).found
    folders = hf_cache.link(found, root)
    assert folders == (("vae", root / "vae"), ("loras", root / "loras"))
    assert (root / "loras" / LORA.name).read_bytes() == b"lora" and (root / "vae" / VAE.name).is_symlink()
    assert not stale.is_symlink()
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.safetensors")) == [
        "loras/wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors", "vae/wan_2.1_vae.safetensors",
    ]  # fmt: skip


def test_model_repo_must_name_a_repository() -> None:
    assert hf_cache.RepoPin.parse("Comfy-Org/Wan_2.2_ComfyUI_Repackaged@main") == hf_cache.RepoPin(REPACKAGED, "main")
    for bad in ("Wan_2.2", "a/b/c", "a/b@", "https://huggingface.co/a/b"):
        with pytest.raises(ValueError, match="org/name or org/name@revision"):
            hf_cache.RepoPin.parse(bad)
