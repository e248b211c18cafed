"""RunPod's cached model: the served tasks' files found in a Hugging Face cache under VOLUME_PATH,
linked where ComfyUI looks first, through a real boot of ``handler.py --rp_serve_api``."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from comfy_bootstrap.errors import ModelsMissing
from comfy_bootstrap.models import check_models, extra_model_paths_yaml, find_model
from tests.comfy_double.folders import Folders, load_extra_model_paths
from tests.comfy_double.inprocess import safetensors_stand_in
from tests.fake_hub import FakeHub, HubEntry, fill_cache
from tests.harness import DOUBLE_DIR, decode_mp4, png_b64, running_worker
from tests.test_hf_cache import read_only, writable
from worker.cached_models import link_cached_models, sought_files
from worker.preflight import preflight
from worker.settings import Settings
from worker.tasks import REGISTRY

I2V_SPECS = REGISTRY["i2v"].all_specs
#: A LoRA whose keys fit no model: the double logs `lora key not loaded` for each when it loads it.
MISMATCH = [("lora_unet_other.weight", (4, 4))]


def stand_in(spec) -> bytes:
    return safetensors_stand_in(f"{spec.folder}/{spec.default}")


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A volume whose only model files are the i2v task's, in the Hugging Face cache RunPod mounts read-only."""
    root = tmp_path / "cached-volume"
    files = {(spec.source.repo, spec.source.path): HubEntry(stand_in(spec)) for spec in I2V_SPECS}
    with FakeHub(files) as hub:
        fill_cache(hub, root / "huggingface-cache" / "hub", files)
    read_only(root / "huggingface-cache")
    yield root
    writable(root / "huggingface-cache")


def settings_for(volume: Path, tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"VOLUME_PATH": str(volume), "WORKER_DIR": str(tmp_path / "work"), "TASKS": "i2v", **env})


def test_every_file_a_served_task_loads_is_sought_once_with_its_publisher() -> None:
    sought = sought_files(Settings.from_env({"TASKS": "i2v,flf2v", "MODEL_LORA": "mine/distill.safetensors"}))
    assert len(sought) == 9  # i2v and flf2v share theirs; the 4-step LoRAs and the two interpolation models too
    assert {s.published[0] for s in sought if s.file.folder == "frame_interpolation"} == {"Comfy-Org/frame_interpolation"}
    lora = next(s for s in sought if s.file.setting == "MODEL_LORA")
    assert lora.file.name == "mine/distill.safetensors"
    assert lora.published == ("Kijai/WanVideo_comfy", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors")


def test_linked_files_come_before_the_volume_in_comfyuis_search_order(volume: Path, tmp_path: Path) -> None:
    settings = link_cached_models(settings_for(volume, tmp_path, COMFY_DIR=str(DOUBLE_DIR), COMFY_EXTRA_ARGS="--cpu"))
    links = tmp_path / "work" / "model-links"
    yaml_path = tmp_path / "extra_model_paths.yaml"
    yaml_path.write_text(extra_model_paths_yaml(settings.comfy))
    folders = Folders.create(tmp_path / "comfyui")
    load_extra_model_paths(folders, yaml_path)
    for folder in ("diffusion_models", "text_encoders", "vae", "loras"):
        paths = folders.model_folders[folder].paths
        assert paths.index(links / folder) < paths.index(volume / "models" / folder), folder
    for spec in I2V_SPECS:
        expected = links / spec.folder / spec.default
        assert folders.find_model(spec.folder, spec.default) == expected and expected.read_bytes() == stand_in(spec)
    for file in {f for speed in ("default", "4step") for f in REGISTRY["i2v"].model_files(settings.model_names, speed)}:
        assert find_model(settings.comfy, file) == links / file.folder / file.name  # the worker's checks see the same
    assert preflight(settings, gpus=[]) == []  # nothing is missing


def test_models_missing_names_both_places(tmp_path: Path) -> None:
    settings = Settings.from_env({"VOLUME_PATH": str(tmp_path / "vol"), "MODEL_REPO": "me/wan22@main"})
    files = REGISTRY["ti2v-5b"].model_files(settings.model_names)
    with pytest.raises(ModelsMissing) as info:
        check_models(settings.comfy, files, lambda folder: [])
    vae = f"{tmp_path}/vol/models/vae/wan2.2_vae.safetensors"
    assert (
        f"expected at {vae}; searched {tmp_path}/vol/models/vae; not in the Hugging Face cache "
        f"{tmp_path}/vol/huggingface-cache/hub either (MODEL_REPO=me/wan22@main: split_files/vae/wan2.2_vae.safetensors, "
        "vae/wan2.2_vae.safetensors, wan2.2_vae.safetensors)"
    ) in str(info.value)


def test_a_volume_with_only_a_cached_model_runs_an_i2v_job(volume: Path, tmp_path: Path) -> None:
    with running_worker(tmp_path, VOLUME_PATH=str(volume), TASKS="i2v") as api:
        body = api.runsync({"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5}})
        assert body["status"] == "COMPLETED", body.get("error")
        assert decode_mp4(base64.b64decode(body["output"]["video"]))["frames"] == 5
    log = (tmp_path / "worker.log").read_text()
    cache = volume / "huggingface-cache" / "hub"
    assert (
        f"Hugging Face cache {cache}: Comfy-Org/Wan_2.2_ComfyUI_Repackaged@0123456789ab (main), "
        "Comfy-Org/frame_interpolation@0123456789ab (main), Kijai/WanVideo_comfy@0123456789ab (main)"
    ) in log
    assert "  found diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors: Comfy-Org/Wan_2.2_ComfyUI_Repackaged/" in log
    assert "models of task" not in log and "not there" not in log  # nothing missing, nothing looked for in vain
    assert f"  - models also searched on the volume {volume} after the cached model's files linked in {tmp_path}/work/model-links" in log


def test_with_both_places_the_cached_files_are_the_ones_loaded(volume: Path, tmp_path: Path) -> None:
    models = volume / "models"
    for spec in I2V_SPECS:  # the volume's copies: each one would fail the job if it were used
        path = models / spec.folder / spec.default
        path.parent.mkdir(parents=True, exist_ok=True)
        broken = spec.folder == "diffusion_models"
        path.write_bytes(b"<!DOCTYPE html>" if broken else safetensors_stand_in(f"{spec.folder}/x", tensors=MISMATCH))
    with running_worker(tmp_path, VOLUME_PATH=str(volume), TASKS="i2v") as api:
        body = api.runsync({"prompt": "x", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5}})
        state = requests.get(f"http://127.0.0.1:{api.env['COMFY_PORT']}/__double__/state", timeout=5).json()
    assert body["status"] == "COMPLETED", body.get("error")  # the volume's HTML "expert" would be models_invalid
    comfy_log = (tmp_path / "work" / "comfyui.log").read_text()
    assert "lora key not loaded" not in comfy_log  # the volume's mismatching LoRA was not loaded
    searched = state["folders"]["models"]["loras"]
    assert searched.index(str(tmp_path / "work" / "model-links" / "loras")) < searched.index(str(models / "loras"))
