"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# ==================================================================================================
# ComfyUI test double (tests/comfy_double/) - fixtures owned by the double's maintainers.
# ==================================================================================================
from tests.comfy_double import WORKFLOW_MODEL_FILES, DoubleServer, create_model_files


@pytest.fixture
def comfy_volume(tmp_path: Path) -> Path:
    """A fake network volume: ``<volume>/models/...`` holding (empty) files of the stored workflow.

    The LoRA sits in ``models/loras/wan/`` (the worker's default layout). Tests may add or remove
    files; the double lists model folders from the disk at every request.
    """
    volume = tmp_path / "runpod-volume"
    create_model_files(volume / "models", WORKFLOW_MODEL_FILES)
    return volume


@pytest.fixture
def comfy_double(tmp_path: Path, comfy_volume: Path) -> Iterator[DoubleServer]:
    """A running in-process ComfyUI double (``.url``, ``.ws_url(id)``, folders, fault controls).

    Its model folders are ``comfy_volume/models`` registered as the worker's extra_model_paths.yaml
    does; input/output/temp/user are ``tmp_path/comfy/{input,output,temp,user}``.
    """
    base = tmp_path / "comfy"
    server = DoubleServer(
        models_root=comfy_volume / "models",
        base_dir=base,
        input_dir=base / "input",
        output_dir=base / "output",
        temp_dir=base / "temp",
        user_dir=base / "user",
    )
    with server:
        yield server


# ==================================================================================================
# End of the ComfyUI test double section.
# ==================================================================================================


# ==================================================================================================
# The worker's runtime with the double launched as its ComfyUI child, and an S3 API server.
# ==================================================================================================
from tests.harness import settings_for  # noqa: E402
from tests.s3_server import MotoS3  # noqa: E402
from worker.pipeline import Runtime  # noqa: E402


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator:
    """``make_runtime(**env)``: a started Runtime (the double launched as ComfyUI), stopped after the test."""
    runtimes: list[Runtime] = []

    def make(**env: str) -> Runtime:
        runtime = Runtime.create(settings_for(tmp_path, **env))
        runtime.server.start()
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.server.stop()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    """A moto S3 server on 127.0.0.1 shared by a test module (each test makes its own bucket)."""
    server = MotoS3().start()
    try:
        yield server
    finally:
        server.stop()


# ==================================================================================================
# Hypothesis (tests/test_fuzz_*.py): "ci" by default, short enough for every run; "fuzz" for
# `make fuzz` (HYPOTHESIS_PROFILE=fuzz), thousands of examples per property, failures kept in .hypothesis/.
# ==================================================================================================
settings.register_profile(
    "ci", max_examples=200, deadline=timedelta(seconds=2), database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fuzz", max_examples=5000, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
