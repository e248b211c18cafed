"""docs/examples/client.py (requests) and client.mjs (fetch) against the stand-in RunPod platform
(tests/runpod_platform.py) with the real worker in production mode; docs/client.md quotes them whole."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, decode_mp4
from tests.test_client import Stack, stack  # noqa: F401  (the worker on the stand-in platform, once per module)

EXAMPLES = REPO / "docs" / "examples"
RUNNERS = {
    "client.py": [sys.executable],
    "client.mjs": [shutil.which("node") or "node"],
}
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
EXAMPLE_IDS = ["client.py", pytest.param("client.mjs", marks=needs_node)]


def command(on: Stack, name: str, out: Path, prompt: str = "a cat walks along the beach") -> list[str]:
    return [*RUNNERS[name], str(EXAMPLES / name), on.platform.endpoint_id, str(on.image), prompt, str(out)]


def env(on: Stack, api_key: str | None = None) -> dict[str, str]:
    return {**on.client_env(api_key), "POLL_SECONDS": "0.2"}


def test_client_md_quotes_each_example_whole() -> None:
    text = (REPO / "docs" / "client.md").read_text()
    for name, fence in (("client.py", "python"), ("client.mjs", "javascript")):
        block = re.search(rf"```{fence}\n(.*?)```", text.split(f"docs/examples/{name}", 1)[1], re.DOTALL)
        assert block and block.group(1) == (EXAMPLES / name).read_text(), f"docs/client.md and docs/examples/{name} differ"


@pytest.mark.parametrize("name", EXAMPLE_IDS)
def test_a_job_is_submitted_polled_and_its_video_saved(stack: Stack, name: str, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out.mp4"
    done = subprocess.run(command(stack, name, out), env=env(stack), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (")
    video = decode_mp4(out.read_bytes())
    assert (video["width"], video["height"], video["frames"]) == (832, 480, 81)
    assert '"stage"' in done.stderr or "'stage'" in done.stderr  # it showed the worker's progress while polling
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize("name", EXAMPLE_IDS)
def test_a_failed_job_exits_1_with_the_workers_error_and_writes_nothing(stack: Stack, name: str, tmp_path: Path) -> None:  # noqa: F811
    stack.fault(mode="runtime_error")
    done = subprocess.run(command(stack, name, tmp_path / "out.mp4"), env=env(stack), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "job FAILED: execution_failed: " in done.stderr and "CUDA out of memory" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", EXAMPLE_IDS)
def test_a_wrong_api_key_is_an_error_naming_http_401(stack: Stack, name: str, tmp_path: Path) -> None:  # noqa: F811
    done = subprocess.run(command(stack, name, tmp_path / "out.mp4"), env=env(stack, "wrong"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "401" in done.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", EXAMPLE_IDS)
def test_ctrl_c_cancels_the_job(stack: Stack, name: str, tmp_path: Path) -> None:  # noqa: F811
    stack.fault(mode="step_delay", seconds=0.5)
    before = {j.id for j in stack.platform.all_jobs()}
    proc = subprocess.Popen(command(stack, name, tmp_path / "out.mp4"), env=env(stack), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        stack.platform.wait_for(lambda p: any(j.id not in before and len(j.progress) >= 2 for j in p.all_jobs()), timeout=60)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    (job,) = [j for j in stack.platform.all_jobs() if j.id not in before]
    assert proc.returncode == 130, err
    assert f"job {job.id} cancelled" in err and job.status == "CANCELLED" and list(tmp_path.iterdir()) == []
    stack.platform.wait_for(lambda p: stack.worker_log.read_text().count("Job stopped.") >= 1, timeout=20)


def test_the_examples_need_nothing_beyond_what_they_say() -> None:
    """client.py: the standard library and requests; client.mjs: Node.js's own modules and fetch."""
    imports = re.findall(r"^(?:import|from) (\w+)", (EXAMPLES / "client.py").read_text(), re.MULTILINE)
    assert set(imports) - set(sys.stdlib_module_names) == {"requests"}
    modules = re.findall(r'from "([^"]+)"', (EXAMPLES / "client.mjs").read_text())
    assert modules and all(m.startswith("node:") for m in modules)


def test_every_package_scripts_client_imports_is_in_its_requirements_at_the_workers_pin() -> None:
    import ast

    tree = ast.parse((REPO / "scripts" / "client.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    pins = dict(line.split("==") for line in (REPO / "scripts" / "requirements-client.txt").read_text().splitlines()
                if line and not line.startswith("#"))  # fmt: skip
    assert third_party == set(pins), "scripts/client.py's imports and scripts/requirements-client.txt differ"
    worker_pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    for name, version in pins.items():
        assert worker_pins.get(name, version) == version, f"{name}: {version} for the client, {worker_pins[name]} for the worker"
