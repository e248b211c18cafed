"""Settings.from_env: every variable checked at boot, every bad one named in one message."""

from __future__ import annotations

import pytest

from worker.settings import ConfigError, Settings
from worker.tasks import TASK_NAMES


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    return str(caught.value)


def test_defaults_serve_every_task_and_warm_up_i2v() -> None:
    settings = Settings.from_env({})
    assert settings.tasks == TASK_NAMES == ("i2v", "flf2v", "t2v", "ti2v-5b", "s2v", "control", "animate")
    assert settings.warmup_task == "i2v" and settings.default_frame_rate == 24.0


def test_tasks_are_a_comma_list_of_known_tasks() -> None:
    assert Settings.from_env({"TASKS": " t2v, ti2v-5b ,t2v"}).tasks == ("t2v", "ti2v-5b")
    assert Settings.from_env({"TASKS": "t2v,ti2v-5b"}).warmup_task == "t2v"  # i2v is not served
    assert error_of({"TASKS": "i2v,t2v-5b"}) == (
        "invalid configuration: TASKS='i2v,t2v-5b': unknown task t2v-5b; the tasks are i2v, flf2v, t2v, ti2v-5b, s2v, control, animate"
    )
    assert error_of({"TASKS": "t2v", "WARMUP_TASK": "i2v"}) == (
        "invalid configuration: WARMUP_TASK='i2v': not one of the served TASKS (t2v)"
    )


def test_model_files_of_every_task_can_be_renamed() -> None:
    settings = Settings.from_env({"MODEL_TI2V_5B": "my_5b.safetensors", "MODEL_VAE": "vae/mine.safetensors"})
    assert settings.model_names["MODEL_TI2V_5B"] == "my_5b.safetensors"
    assert settings.model_names["MODEL_VAE"] == "vae/mine.safetensors"
    assert settings.model_names["MODEL_T2V_HIGH_NOISE"] == "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"


def test_limits_a_job_could_never_meet_stop_the_worker_with_every_reason() -> None:
    message = error_of({"MAX_WIDTH": "70", "MAX_LENGTH": "6", "TASKS": "i2v"})
    assert message == (
        "invalid configuration: MAX_WIDTH='70': not a multiple of 16, the size step of the served tasks "
        "(allowed: multiples of 16 from 16 to 16384); MAX_LENGTH='6': not 4n+1 frames (allowed: 1, 5, 9, …, 81, …, "
        "161, …, 16381); MAX_WIDTH='70': below the default width of task i2v (832); MAX_LENGTH='6': below the "
        "default length of task i2v (81)"
    )


def test_the_size_step_is_the_largest_of_the_served_tasks() -> None:
    assert Settings.from_env({"MAX_WIDTH": "1008", "TASKS": "i2v,t2v"}).limits.max_width == 1008
    assert error_of({"MAX_WIDTH": "1008", "TASKS": "i2v,ti2v-5b,flf2v"}) == (
        "invalid configuration: MAX_WIDTH='1008': not a multiple of 32, the size step of the served tasks (allowed: "
        "multiples of 32 from 32 to 16384); ti2v-5b needs multiples of 32: to keep 1008, serve TASKS=i2v,flf2v; "
        "MAX_WIDTH='1008': below the default width of task ti2v-5b (1280)"
    )
    assert "serve TASKS" not in error_of({"MAX_WIDTH": "1000", "TASKS": "ti2v-5b"})  # nothing to leave out


def test_bad_values_of_several_kinds_are_named_together() -> None:
    message = error_of({"COMFY_PORT": "0", "JOB_TIMEOUT": "soon", "DEFAULT_FRAME_RATE": "90", "OUTPUT_MODE": "ftp"})
    for clause in ("COMFY_PORT='0': must be within 1..65535", "JOB_TIMEOUT='soon'", "OUTPUT_MODE='ftp': allowed values are"):
        assert clause in message
    assert "DEFAULT_FRAME_RATE=90: above MAX_FRAME_RATE=60" in message


def test_speed_switches_of_the_launch() -> None:
    assert Settings.from_env({}).comfy.fast == "off" and Settings.from_env({}).torch_compile is False
    assert Settings.from_env({"COMFY_FAST": " Auto "}).comfy.fast == "auto"
    fast = Settings.from_env({"COMFY_FAST": "autotune, fp8_matrix_mult,autotune"}).comfy.fast
    assert fast == "autotune,fp8_matrix_mult"
    assert Settings.from_env({"TORCH_COMPILE": "true", "COMFY_ATTENTION": "sage"}).torch_compile is True
    assert Settings.from_env({"TORCH_COMPILE": "true"}).warmup is True  # the first compile before the first job
    assert Settings.from_env({"TORCH_COMPILE": "true", "WARMUP": "false"}).warmup is False
    assert Settings.from_env({}).warmup is False


def test_bad_speed_switches_name_the_variable_and_what_is_allowed() -> None:
    message = error_of({"COMFY_FAST": "fp8,autotune", "COMFY_ATTENTION": "sage2", "TORCH_COMPILE": "max"})
    assert message == (
        "invalid configuration: COMFY_ATTENTION='sage2': allowed values are pytorch, sage, flash, xformers, split; "
        "COMFY_FAST='fp8,autotune': unknown feature 'fp8'; allowed: off, auto, or a comma-separated list of "
        "fp16_accumulation, fp8_matrix_mult, cublas_ops, autotune; "
        "TORCH_COMPILE='max': expected true/false (1/0, yes/no, on/off)"
    )
    assert "COMFY_FAST='auto,': unknown features 'auto', ''; allowed: off, auto, or" in error_of({"COMFY_FAST": "auto,"})
