"""``python handler.py --help`` and a Python without the worker's packages, as a newcomer meets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import REPO, process_env


def test_help_names_the_modes_and_where_the_variables_are_without_booting(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    result = subprocess.run([sys.executable, "handler.py", "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    out = result.stdout
    assert out.startswith("usage: python handler.py [--rp_serve_api")
    for mode in ("the production\n                                   job loop", "runs test_input.json once", "--rp_serve_api RunPod's local test API", "make serve"):
        assert mode in out, mode
    assert 'README.md ("Configuration")' in out and 'docs/deployment.md\n  ("Environment variables")' in out
    assert not Path(env["WORKER_DIR"]).exists(), "--help booted the worker (it wrote its work folder)"


def test_a_python_without_the_workers_packages_gets_one_line_saying_which_python_to_use() -> None:
    # -S: no site-packages at all, as a system python3 without the requirements
    result = subprocess.run([sys.executable, "-S", "handler.py"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("handler.py: No module named ")
    assert "Run it with .venv/bin/python handler.py, or `make serve` (which creates .venv)" in result.stderr
