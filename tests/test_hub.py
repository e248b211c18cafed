"""RunPod Hub files (.runpod/hub.json, .runpod/tests.json) against the Hub's format and config.py.

Format: docs.runpod.io/hub/publishing-guide (hub.json: title, description, type, category, iconUrl,
config {runsOn, containerDiskInGb, gpuCount, gpuIds, allowedCudaVersions, presets, env};
tests.json: tests [{name, input, timeout (ms)}], config {gpuTypeId, gpuCount, env, allowedCudaVersions}).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.settings import ConfigError, Settings
from worker.tasks import TASK_NAMES

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT / ".runpod" / "hub.json"
TESTS = ROOT / ".runpod" / "tests.json"
class _Recorder(dict):
    """An empty environment that remembers every variable asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key, default=None):
        self.asked.append(key)
        return default


def config_env_names() -> list[str]:
    """Every variable Settings.from_env reads, in the order it reads them."""
    env = _Recorder()
    Settings.from_env(env)
    assert len(env.asked) > 20
    return list(dict.fromkeys(env.asked))


def is_config_default(name: str, value: str) -> bool:
    """True when setting ``name=value`` gives exactly the settings of an empty environment."""
    return Settings.from_env({name: value}) == Settings.from_env({})


def is_valid(name: str, value: str) -> bool:
    try:
        Settings.from_env({name: value})
    except ConfigError:
        return False
    return True


def as_env_value(spec: dict) -> str:
    """The string the Hub puts in the environment for an input's default."""
    default = spec["default"]
    if spec["type"] == "boolean":
        return spec["trueValue"] if default else spec["falseValue"]
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


@pytest.fixture(scope="module")
def hub() -> dict:
    return json.loads(HUB.read_text())


@pytest.fixture(scope="module")
def hub_tests() -> dict:
    return json.loads(TESTS.read_text())


def cuda_versions_ok(versions: list[str]) -> bool:
    """Hosts whose driver runs CUDA 12.8 wheels (driver >= 570): CUDA 12.8 and later."""
    return bool(versions) and all(tuple(int(x) for x in v.split(".")) >= (12, 8) for v in versions)


def test_hub_metadata(hub: dict) -> None:
    assert hub["type"] == "serverless"
    assert hub["category"] == "video"
    assert hub["title"] and hub["description"]
    assert "Image-to-Video" not in hub["title"], "the worker runs every task, not image-to-video alone"
    assert all(f"{task} (" in hub["description"] for task in TASK_NAMES), "the description names each task"
    config = hub["config"]
    assert config["runsOn"] == "GPU"
    assert isinstance(config["containerDiskInGb"], int) and config["containerDiskInGb"] >= 20
    assert config["gpuCount"] == 1
    pools = [p for p in config["gpuIds"].split(",") if not p.startswith("-")]
    # 48 GB (L40S), 80 GB (H100), 32 GB (RTX 5090) and 24 GB (RTX 4090) pools.
    assert pools == ["ADA_48_PRO", "ADA_80_PRO", "ADA_32_PRO", "ADA_24"]
    assert cuda_versions_ok(config["allowedCudaVersions"])


def test_every_hub_variable_is_read_by_config_with_the_same_default(hub: dict) -> None:
    names = set(config_env_names())
    keys = [item["key"] for item in hub["config"]["env"]]
    assert len(keys) == len(set(keys)), "a variable is listed twice"
    for item in hub["config"]["env"]:
        key, spec = item["key"], item["input"]
        assert key in names, f"{key} is not read by Settings.from_env"
        assert spec["name"] and spec["description"] and spec["type"] in ("string", "number", "boolean")
        assert is_config_default(key, as_env_value(spec)), f"{key}: hub.json default {spec['default']!r}"
        for option in spec.get("options", []):
            assert is_valid(key, option["value"]), f"{key}: option {option['value']!r} is refused by config.py"
        if spec.get("options"):
            assert spec["default"] in [o["value"] for o in spec["options"]]


def test_attention_choices_are_those_the_default_image_has(hub: dict) -> None:
    spec = next(item["input"] for item in hub["config"]["env"] if item["key"] == "COMFY_ATTENTION")
    values = {o["value"] for o in spec["options"]}
    assert spec["default"] == "pytorch"
    assert "sage" not in values and "flash" not in values  # not built into the Hub's image


def test_presets_only_set_listed_variables_to_valid_values(hub: dict) -> None:
    env = {item["key"]: item["input"] for item in hub["config"]["env"]}
    presets = hub["config"]["presets"]
    assert presets
    for preset in presets:
        assert preset["name"]
        for key, value in preset["defaults"].items():
            assert key in env, f"preset {preset['name']!r} sets {key}, which hub.json does not list"
            assert is_valid(key, str(value)), f"preset {preset['name']!r}: {key}={value!r}"


def test_hub_test_is_one_short_job_like_test_input(hub: dict, hub_tests: dict) -> None:
    (case,) = hub_tests["tests"]
    assert case["name"]
    assert isinstance(case["timeout"], int) and 60_000 <= case["timeout"] <= 900_000  # milliseconds
    sample = json.loads((ROOT / "test_input.json").read_text())["input"]
    job = case["input"]
    assert job["prompt"] == sample["prompt"] and job["image"] == sample["image"]
    assert set(job["options"]) <= set(sample["options"])
    assert job["options"]["length"] <= sample["options"]["length"]
    assert job["options"]["width"] * job["options"]["height"] <= sample["options"]["width"] * sample["options"]["height"]


def test_hub_test_config(hub: dict, hub_tests: dict) -> None:
    config = hub_tests["config"]
    assert config["gpuTypeId"] == "NVIDIA GeForce RTX 4090"
    assert config["gpuCount"] == 1
    assert config["allowedCudaVersions"] == hub["config"]["allowedCudaVersions"]
    names = set(config_env_names())
    for item in config["env"]:
        assert set(item) == {"key", "value"}
        assert item["key"] in names and is_valid(item["key"], item["value"]), item
