"""A task's model files, extra_model_paths.yaml as ComfyUI reads it, and the missing-model message."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from comfy_bootstrap.config import ComfySettings as Settings
from comfy_bootstrap.errors import ModelsMissing
from comfy_bootstrap.models import VOLUME_SUBDIRS, check_models, describe_volume, extra_model_paths_yaml, write_extra_model_paths
from tests.comfy_double.folders import Folders, load_extra_model_paths
from worker.settings import Settings as WorkerSettings
from worker.tasks import REGISTRY

NAMES = WorkerSettings().model_names
#: The files every i2v job loads (an interpolating job adds its interpolation model).
I2V_FILES = [spec.file(NAMES) for spec in REGISTRY["i2v"].specs() if spec.loaded_by is None]

RECORDINGS = Path(__file__).parent / "recordings"
EXPECTED_YAML = """\
runpod_volume:
  base_path: /runpod-volume
  diffusion_models: |
    models/diffusion_models
    models/unet
  text_encoders: |
    models/text_encoders
    models/clip
  vae: models/vae
  loras: models/loras
  audio_encoders: models/audio_encoders
  clip_vision: models/clip_vision
  frame_interpolation: models/frame_interpolation
  checkpoints: models/checkpoints
"""
LORA_BASE = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"


def recorded_listing(folder: str) -> list[str]:
    """``GET /models/{folder}`` as recorded from ComfyUI v0.30.0; unet/clip are 404 there."""
    requests_ = json.loads((RECORDINGS / "models_endpoints.json").read_text())["requests"]
    answer = requests_[f"GET /models/{folder}"]
    if answer["status"] != 200:
        raise AssertionError(f"/models/{folder} is {answer['status']} in ComfyUI: the worker must not ask it")
    return answer["body"]


def comfy_reads(yaml_text: str, yaml_dir: Path) -> dict[str, list[str]]:
    """What ComfyUI's utils/extra_config.py makes of the file: folder -> absolute search paths."""
    result: dict[str, list[str]] = {}
    for conf in yaml.safe_load(yaml_text).values():
        conf = dict(conf)
        base = os.path.expandvars(os.path.expanduser(conf.pop("base_path")))
        if not os.path.isabs(base):
            base = os.path.abspath(os.path.join(yaml_dir, base))
        conf.pop("is_default", None)
        for folder, value in conf.items():
            for line in value.split("\n"):
                if line:
                    result.setdefault(folder, []).append(os.path.normpath(os.path.join(base, line)))
    return result


# ---------------------------------------------------------------------------- a task's files
def test_i2v_needs_the_original_workers_five_files_in_their_folders() -> None:
    files = {f.setting: f for f in I2V_FILES}
    assert set(files) == {"MODEL_HIGH_NOISE", "MODEL_LOW_NOISE", "MODEL_TEXT_ENCODER", "MODEL_VAE", "MODEL_LORA"}
    assert files["MODEL_HIGH_NOISE"].folder == files["MODEL_LOW_NOISE"].folder == "diffusion_models"
    assert files["MODEL_TEXT_ENCODER"].folder == "text_encoders"
    assert files["MODEL_VAE"].folder == "vae"
    assert files["MODEL_LORA"].folder == "loras"
    assert files["MODEL_LORA"].name == f"wan/{LORA_BASE}"
    assert files["MODEL_HIGH_NOISE"].volume_subdirs == ("models/diffusion_models", "models/unet")
    assert files["MODEL_TEXT_ENCODER"].volume_subdirs == ("models/text_encoders", "models/clip")
    assert {f.folder for task in REGISTRY.values() for f in task.model_files(NAMES)} <= set(VOLUME_SUBDIRS)


@pytest.mark.parametrize(("options", "extra"), [
    ({}, None),
    ({"interpolate": 2}, "MODEL_INTERPOLATION_RIFE"),
    ({"interpolate": 3, "frame_rate": 16, "interpolation_model": "film"}, "MODEL_INTERPOLATION_FILM"),
])  # fmt: skip
def test_a_job_loads_the_interpolation_model_it_interpolates_with_and_no_other(options: dict, extra: str | None) -> None:
    from worker.request.parse import parse_request

    request = parse_request({"prompt": "p", "image": "aGk=", "options": options}, WorkerSettings())
    files = {f.setting: f for f in REGISTRY["i2v"].model_files(NAMES, request.speed, request)}
    assert set(files) == {f.setting for f in I2V_FILES} | ({extra} if extra else set())
    if extra:
        assert files[extra].folder == "frame_interpolation" and files[extra].volume_subdirs == ("models/frame_interpolation",)
    every = {f.setting for f in REGISTRY["i2v"].model_files(NAMES)}  # what some job may load: the download script's list
    assert {"MODEL_INTERPOLATION_RIFE", "MODEL_INTERPOLATION_FILM"} <= every


# ---------------------------------------------------------------------------- yaml
def test_yaml_is_exactly_the_documented_text() -> None:
    assert extra_model_paths_yaml(Settings()) == EXPECTED_YAML


def test_yaml_as_comfyui_reads_it(tmp_path: Path) -> None:
    s = Settings(work_dir=tmp_path / "work", volume_path=Path("/runpod-volume"))
    path = write_extra_model_paths(s)
    assert path == s.extra_model_paths_file and path.read_text() == EXPECTED_YAML
    assert comfy_reads(path.read_text(), path.parent) == {
        "diffusion_models": ["/runpod-volume/models/diffusion_models", "/runpod-volume/models/unet"],
        "text_encoders": ["/runpod-volume/models/text_encoders", "/runpod-volume/models/clip"],
        "vae": ["/runpod-volume/models/vae"],
        "loras": ["/runpod-volume/models/loras"],
        "audio_encoders": ["/runpod-volume/models/audio_encoders"],
        "clip_vision": ["/runpod-volume/models/clip_vision"],
        "frame_interpolation": ["/runpod-volume/models/frame_interpolation"],
        "checkpoints": ["/runpod-volume/models/checkpoints"],
    }


def test_yaml_names_the_workers_own_folders_first_and_each_folder_once(tmp_path: Path) -> None:
    links, lora_cache = tmp_path / "model-links" / "loras", tmp_path / "lora-cache"
    settings = Settings(volume_path=tmp_path / "vol", extra_model_dirs=(("loras", links), ("loras", lora_cache)))
    path = write_extra_model_paths(replace(settings, work_dir=tmp_path))
    folders = Folders.create(tmp_path / "comfyui")
    load_extra_model_paths(folders, path)
    assert folders.model_folders["loras"].paths[-3:] == [links, lora_cache, tmp_path / "vol" / "models" / "loras"]


@pytest.mark.parametrize("volume", ["/mnt/my volume", "/data/a:b #c", "/vol/ünï'cödé\""])
def test_yaml_quotes_unusual_volume_paths(volume: str) -> None:
    read = comfy_reads(extra_model_paths_yaml(Settings(volume_path=Path(volume))), Path("/"))
    assert read["vae"] == [f"{volume}/models/vae"]


# ---------------------------------------------------------------------------- check_models
def test_check_models_passes_on_recorded_listing() -> None:
    asked: list[str] = []

    def list_folder(folder: str) -> list[str]:
        asked.append(folder)
        return recorded_listing(folder)

    check_models(Settings(), I2V_FILES, list_folder)
    assert sorted(asked) == ["diffusion_models", "loras", "text_encoders", "vae"]  # each once, never unet/clip


def test_lora_at_folder_root_instead_of_subfolder(tmp_path: Path) -> None:
    (tmp_path / "models" / "loras").mkdir(parents=True)
    (tmp_path / "models" / "loras" / LORA_BASE).write_bytes(b"x")

    def list_folder(folder: str) -> list[str]:
        names = recorded_listing(folder)
        return [n for n in names if not n.startswith("wan/")]

    with pytest.raises(ModelsMissing) as info:
        check_models(Settings(volume_path=tmp_path), I2V_FILES, list_folder)
    msg = str(info.value)
    assert msg.startswith("1 model file not found by ComfyUI")
    assert f"'wan/{LORA_BASE}'" in msg and "MODEL_LORA" in msg
    assert f"{tmp_path}/models/loras/wan/{LORA_BASE}" in msg  # where it should be
    assert f"searched {tmp_path}/models/loras" in msg
    assert f"same name as '{LORA_BASE}' in loras ({tmp_path}/models/loras/{LORA_BASE})" in msg
    assert "Value not in list" not in msg
    assert info.value.code == "models_missing" and not info.value.refresh_worker


def test_every_missing_file_is_named_with_its_folders() -> None:
    listings = {"diffusion_models": [], "text_encoders": ["other.safetensors"], "vae": [], "loras": []}
    with pytest.raises(ModelsMissing) as info:
        check_models(Settings(volume_path=Path("/runpod-volume")), I2V_FILES, listings.__getitem__, subject="task i2v: ")
    msg = str(info.value)
    assert msg.startswith("task i2v: 5 model files not found by ComfyUI")
    for f in I2V_FILES:
        assert f"- {f.label} {f.name!r} ({f.setting}): expected at" in msg
    high = I2V_FILES[0].name
    assert "/runpod-volume/models/diffusion_models, /runpod-volume/models/unet" in msg
    assert f"/runpod-volume/models/diffusion_models/{high} or /runpod-volume/models/unet/{high}" in msg
    assert "/runpod-volume/models/text_encoders, /runpod-volume/models/clip" in msg
    assert "/runpod-volume/models/vae" in msg
    assert "does not exist: is a network volume attached" in msg


def test_file_in_wrong_folder_is_pointed_out() -> None:
    names = {f.setting: f.name for f in I2V_FILES}
    listings = {
        "diffusion_models": [names["MODEL_HIGH_NOISE"], names["MODEL_LOW_NOISE"], names["MODEL_VAE"]],  # VAE misplaced
        "text_encoders": [names["MODEL_TEXT_ENCODER"]],
        "vae": [],
        "loras": [names["MODEL_LORA"]],
    }
    with pytest.raises(ModelsMissing) as info:
        check_models(Settings(), I2V_FILES, listings.__getitem__)
    assert f"same name as '{names['MODEL_VAE']}' in diffusion_models" in str(info.value)
    assert "or set MODEL_VAE to that name" in str(info.value)


def test_attached_message_names_the_url() -> None:
    s = Settings(url="http://10.0.0.5:8188")
    listings = {"diffusion_models": [], "text_encoders": [], "vae": [], "loras": []}
    with pytest.raises(ModelsMissing, match=r"at http://10\.0\.0\.5:8188"):
        check_models(s, I2V_FILES, listings.__getitem__)


# ---------------------------------------------------------------------------- describe_volume
def test_describe_missing_volume(tmp_path: Path) -> None:
    text = describe_volume(Settings(volume_path=tmp_path / "absent"))
    assert "does not exist" in text


def test_describe_volume_lists_files_and_subfolders(tmp_path: Path) -> None:
    (tmp_path / "models" / "unet").mkdir(parents=True)
    (tmp_path / "models" / "unet" / "a.safetensors").write_bytes(b"")
    (tmp_path / "models" / "loras" / "wan").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "wan" / "l.safetensors").write_bytes(b"")
    (tmp_path / "models" / "loras" / "notes.txt").write_text("")
    (tmp_path / "models" / "vae").mkdir()
    text = describe_volume(Settings(volume_path=tmp_path))
    lines = text.splitlines()
    assert lines[0] == f"volume {tmp_path}:"
    assert f"  {tmp_path}/models/unet: a.safetensors" in lines
    assert f"  {tmp_path}/models/loras: wan/l.safetensors" in lines
    assert f"  {tmp_path}/models/vae: (no model files)" in lines
    assert f"  {tmp_path}/models/clip: (missing)" in lines
