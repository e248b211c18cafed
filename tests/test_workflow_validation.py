"""Every task's filled graph passes ComfyUI's own validation rules, from the recorded ``object_info``.

The validator is the ComfyUI double's (``tests/comfy_double/validation.py``), which reproduces
ComfyUI v0.30.0's ``validate_prompt`` against the recorded node definitions: required inputs,
INT/FLOAT conversion, min/max, COMBO lists (sampler, scheduler, resize method, model files read
from the model folders), LoadImage's file check, and links between nodes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.comfy_double import create_model_files
from tests.comfy_double.folders import Folders, apply_model_paths, volume_model_paths
from tests.comfy_double.inprocess import ALL_MODEL_FILES
from tests.comfy_double.node_defs import NodeCatalog
from tests.comfy_double.validation import PromptValidator
from tests.harness import filled_graph
from worker.graph import job_files
from worker.request.options import SAMPLER_NAMES, SCHEDULERS
from worker.settings import Limits, Settings
from worker.tasks import REGISTRY
from worker.tasks.common import RESIZE_METHODS

LIMITS = Limits()


@pytest.fixture
def validator(tmp_path: Path):
    folders = Folders.create(tmp_path / "comfy")
    create_model_files(tmp_path / "volume" / "models", ALL_MODEL_FILES)
    apply_model_paths(folders, volume_model_paths(tmp_path / "volume" / "models"))
    folders.ensure_io_dirs()
    files = job_files("v")
    for field in ("image", "end_image"):
        (folders.input_dir / files.input_name(field, ".png")).write_bytes(b"png")
    return PromptValidator(NodeCatalog(folders), folders), files


#: A job of each task with every image it can take, and with only its required ones.
TASK_JOBS: dict[str, dict] = {
    "i2v": {"image": "aGk="},
    "flf2v": {"task": "flf2v", "image": "aGk=", "end_image": "aGk="},
    "flf2v end only": {"task": "flf2v", "end_image": "aGk="},
    "t2v": {"task": "t2v"},
    "ti2v-5b": {"task": "ti2v-5b", "image": "aGk="},
    "ti2v-5b text only": {"task": "ti2v-5b"},
}


def _validate(validator, job: str = "i2v", last_frame: bool = False, **options):
    checker, files = validator
    job_input = {"prompt": "p", **TASK_JOBS[job], "options": options, "return_last_frame": last_frame}
    return checker.validate(filled_graph(job_input, files=files).prompt)


@pytest.mark.parametrize(
    "options",
    [
        {},  # the original worker's defaults: 832x832, 81 frames, 6 steps, cfg 1, 24 fps
        {"width": 16, "height": 16, "length": 1, "steps": 1, "split_step": 0, "seed": 0, "cfg": 0, "frame_rate": 1},
        {"width": LIMITS.max_width, "height": LIMITS.max_height, "length": LIMITS.max_length, "steps": LIMITS.max_steps,
         "split_step": LIMITS.max_steps, "seed": 2**64 - 1, "cfg": 100, "shift": 100, "lora_strength": -100},
        {"width": 832, "height": 480, "length": 81, "shift": 0, "lora_strength": 100, "resize": "pad"},
    ],
)
def test_filled_workflow_is_valid_at_every_bound(validator, options) -> None:
    result = _validate(validator, **options)
    assert result.valid, (result.error, result.node_errors)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_allowed_sampler_is_valid(validator, sampler) -> None:
    assert _validate(validator, sampler_name=sampler).valid


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("resize", list(RESIZE_METHODS))
def test_every_scheduler_and_resize_method_is_valid(validator, scheduler, resize) -> None:
    assert _validate(validator, scheduler=scheduler, resize=resize).valid


def test_a_missing_model_would_be_rejected_by_comfyui(validator, tmp_path: Path) -> None:
    (tmp_path / "volume" / "models" / "vae" / Settings().model_names["MODEL_VAE"]).unlink()
    result = _validate(validator)
    assert not result.valid
    [errors] = [node["errors"] for node in result.node_errors.values() if node["class_type"] == "VAELoader"]
    assert errors[0]["type"] == "value_not_in_list"


def _bounds(task: str) -> list[dict]:
    """Options at the task's lower and upper bounds (each task takes only its own options)."""
    step = REGISTRY[task].size_step
    low = {"width": step, "height": step, "length": 1, "steps": 1, "seed": 0, "cfg": 0, "frame_rate": 1, "shift": 0}
    high = {"width": LIMITS.max_width // step * step, "height": LIMITS.max_height // step * step, "length": LIMITS.max_length,
            "steps": LIMITS.max_steps, "seed": 2**64 - 1, "cfg": 100, "shift": 100}  # fmt: skip
    if "split_step" in REGISTRY[task].options:
        low.update(split_step=0, lora_strength=-100)
        high.update(split_step=LIMITS.max_steps, lora_strength=100)
    return [{}, low, high, {"resolution": "480p", "aspect_ratio": "9:16", "duration": 2}]


@pytest.mark.parametrize("job", list(TASK_JOBS))
def test_every_tasks_graph_is_valid_at_its_bounds_with_the_last_frame(validator, job: str) -> None:
    task = TASK_JOBS[job].get("task", "i2v")
    for options in _bounds(task):
        for last_frame in (False, True):
            result = _validate(validator, job, last_frame, **options)
            assert result.valid, (job, options, result.error, result.node_errors)


@pytest.mark.parametrize("job", list(TASK_JOBS))
def test_every_tasks_graph_has_its_samplers_and_schedulers(validator, job: str) -> None:
    for sampler, scheduler in zip(SAMPLER_NAMES, SCHEDULERS * 5, strict=False):
        assert _validate(validator, job, sampler_name=sampler, scheduler=scheduler).valid


@pytest.mark.parametrize("video_format", ["h264-mp4", "h265-mp4", "webm", "nvenc_h264-mp4"])
@pytest.mark.parametrize("job", ["i2v", "t2v", "ti2v-5b text only"])
def test_interpolation_formats_and_loras_keep_the_graph_valid(validator, tmp_path: Path, job: str, video_format: str) -> None:
    (tmp_path / "volume" / "models" / "loras" / "style").mkdir(parents=True, exist_ok=True)
    create_model_files(tmp_path / "volume" / "models", ["loras/style/film.safetensors"])
    checker, files = validator
    target = "both" if job.startswith("ti2v") else "high"
    job_input = {"prompt": "p", **TASK_JOBS[job], "return_last_frame": True,
                 "loras": [{"name": "style/film.safetensors", "strength": -4, "target": target}],
                 "options": {"interpolate": 4, "frame_rate": 15, "length": 161, "video_format": video_format}}  # fmt: skip
    result = checker.validate(filled_graph(job_input, files=files).prompt)
    assert result.valid, (result.error, result.node_errors)


@pytest.mark.parametrize("job", ["i2v", "flf2v", "flf2v end only", "t2v"])
def test_the_4step_preset_keeps_every_graph_valid_with_its_own_loras(validator, tmp_path: Path, job: str) -> None:
    checker, files = validator
    for options in _bounds(TASK_JOBS[job].get("task", "i2v")):
        result = checker.validate(filled_graph({"prompt": "p", **TASK_JOBS[job], "speed": "4step", "options": options}, files=files).prompt)
        assert result.valid, (job, options, result.error, result.node_errors)
    kind = "t2v" if job == "t2v" else "i2v"
    (tmp_path / "volume" / "models" / "loras" / f"wan2.2_{kind}_lightx2v_4steps_lora_v{'1.1' if kind == 't2v' else '1'}_low_noise.safetensors").unlink()
    result = checker.validate(filled_graph({"prompt": "p", **TASK_JOBS[job], "speed": "4step"}, files=files).prompt)
    [errors] = [node["errors"] for node in result.node_errors.values() if node["class_type"] == "LoraLoaderModelOnly"]
    assert errors[0]["type"] == "value_not_in_list"  # ComfyUI would refuse the graph without the file


@pytest.mark.parametrize("job", list(TASK_JOBS))
def test_torch_compile_keeps_every_graph_valid(validator, job: str) -> None:
    checker, files = validator
    compiled = Settings.from_env({"TORCH_COMPILE": "true"})
    graph = filled_graph({"prompt": "p", **TASK_JOBS[job], "return_last_frame": True}, compiled, files=files)
    assert any(node["class_type"] == "TorchCompileModel" for node in graph.prompt.values())
    result = checker.validate(graph.prompt)
    assert result.valid, (result.error, result.node_errors)
