"""`make build-baked`: the Dockerfile's `baked` stage and its Makefile target, without a Docker engine.

The stage's download step is run as the build would run it (``sh -c`` with the build arguments in
the environment, from the image's WORKDIR, which holds what the repository holds), against the
stand-in Hub of tests/fake_hub.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_hub import FakeHub, HubEntry
from tests.harness import REPO
from tests.test_dockerfile import stages
from tests.test_safetensors import safetensors_file
from worker.tasks import REGISTRY

TI2V = REGISTRY["ti2v-5b"].all_specs


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    files = {(s.source.repo, s.source.path): HubEntry(safetensors_file({"w": (300 + 100 * i,)}, seed=i)) for i, s in enumerate(TI2V)}
    with FakeHub(files) as server:
        yield server


def download_step() -> str:
    """The baked stage's RUN that fetches and checks the files, without its secret mount."""
    run = next(rest for word, rest in stages()["baked"] if word == "RUN" and "scripts/models.py" in rest)
    flags, _, script = run.partition(" ")
    assert flags == "--mount=type=secret,id=HF_TOKEN,env=HF_TOKEN", "the token is a build secret, never a layer"
    return script


def build(hub: FakeHub, tmp_path: Path, tasks: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"  # the image's `python`: this test run's, with its packages
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "BAKE_TASKS": tasks,
        "BAKED_VOLUME": str(tmp_path / "baked"),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    return subprocess.run(["sh", "-c", download_step()], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_baked_stage_is_the_worker_with_the_files_and_the_default_image_has_none() -> None:
    by_stage = stages()
    assert by_stage["baked"][0] == ("FROM", "worker AS baked")
    last = list(by_stage)[-1]
    assert by_stage[last] == [("FROM", "worker")], "a plain `docker build` (make build, the Hub) gives the image without models"
    baked = by_stage["baked"]
    assert ("ENV", "VOLUME_PATH=${BAKED_VOLUME}") in baked
    assert ("RUN", "python -m pip install -r /app/scripts/requirements-models.txt") in baked
    assert not any("HF_TOKEN" in rest for word, rest in baked if word in ("ARG", "ENV"))
    assert (REPO / "scripts" / "requirements-models.txt").read_text().splitlines()[-1] == "huggingface_hub==2.4.0"


def test_the_build_fetches_the_tasks_files_and_checks_them(hub: FakeHub, tmp_path: Path) -> None:
    result = build(hub, tmp_path, "ti2v-5b")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 5 files are present with the Hub's size and SHA-256" in result.stdout  # the --check after the fetch (model, VAE, text encoder, RIFE, FILM)
    for spec in TI2V:
        path = tmp_path / "baked" / "models" / spec.folder / spec.default
        assert path.read_bytes() == hub.files[(spec.source.repo, spec.source.path)].content
        assert path.stat().st_mode & 0o444 == 0o444  # readable by any user the image runs as


def test_a_file_that_is_not_the_hubs_fails_the_build(hub: FakeHub, tmp_path: Path) -> None:
    spec = TI2V[0]
    hub.files[(spec.source.repo, spec.source.path)].sha256 = "ab" * 32
    result = build(hub, tmp_path, "ti2v-5b")
    assert result.returncode != 0
    assert f"{spec.default}: the download from {spec.source.repo}/{spec.source.path} is SHA-256" in result.stdout
    assert not (tmp_path / "baked" / "models" / spec.folder / spec.default).exists()


def test_make_build_baked_names_the_tasks_in_the_tag_and_passes_the_token_as_a_secret() -> None:
    env = {**os.environ, "HF_TOKEN": "hf_neverInTheCommandLine"}
    command = ["make", "-s", "-n", "build-baked", "TASK=i2v t2v", "IMAGE=me/wan"]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    version = (REPO / "VERSION").read_text().strip()
    assert "docker build --platform linux/amd64 --target baked" in out and "--build-arg BAKE_TASKS=i2v,t2v" in out
    assert f"-t me/wan:{version}-i2v-t2v ." in out
    assert "--secret id=HF_TOKEN,env=HF_TOKEN" in out and "hf_neverInTheCommandLine" not in out
    env.pop("HF_TOKEN")
    plain = subprocess.run(["make", "-s", "-n", "build-baked"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=True)
    assert "--build-arg BAKE_TASKS=i2v " in plain.stdout and "--secret" not in plain.stdout and f":{version}-i2v ." in plain.stdout


def test_the_documented_sizes_per_task_set_are_the_files_the_build_fetches() -> None:
    from tests.test_models_script import models  # scripts/models.py, loaded once
    from worker.settings import Settings

    section = (REPO / "docs" / "deployment.md").read_text().split("## The image with the models inside", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:4] for line in section.splitlines() if line.startswith("| `") and "`TASK`" not in line]
    assert len(rows) >= 5
    for task_cell, count, size in rows:
        tasks = task_cell.strip(" `")
        names = models.TASK_NAMES if tasks == "all" else tasks.split(",")
        files = models.wanted_files(Settings(), names)
        assert int(count) == len(files), tasks
        assert size.strip() == f"{sum(models.size_of(f) for f in files) / 1e9:.2f} GB", tasks
