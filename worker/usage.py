"""What ``python handler.py --help`` prints, and the one-line hint when the worker's packages are missing.

handler.py imports this before anything else, so it uses the standard library only: it must work
under a Python that lacks the worker's requirements.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

HELP = """\
usage: python handler.py [--rp_serve_api [--rp_api_port PORT] [--rp_api_host HOST]] [--test_input JSON]

wan22-worker: short videos with Wan 2.2 in a headless ComfyUI v0.30.0, as a RunPod serverless worker.
At boot it launches ComfyUI as a child process, then takes jobs.

modes:
  python handler.py                on RunPod (its RUNPOD_WEBHOOK_* variables set): the production
                                   job loop, one job at a time; the Docker image's command
  python handler.py                anywhere else: runs test_input.json once (or --test_input '<json>')
                                   and exits 0 (the job completed) or 1
  python handler.py --rp_serve_api RunPod's local test API on http://localhost:8000 (--rp_api_port,
                                   --rp_api_host): POST /runsync, or POST /run then POST /status/<id>
  make serve                       the local API from a clone: sets up .venv and uses the ComfyUI of
                                   `make comfyui` and the models of `make models` (./volume)

configuration: environment variables, read once at boot; a bad value stops the worker naming it.
  Every variable, with its default: README.md ("Configuration") and docs/deployment.md
  ("Environment variables"). Jobs: docs/api.md. Calling an endpoint: docs/client.md.
  When something fails: docs/troubleshooting.md.
"""


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv[1:])


def missing_package(exc: ModuleNotFoundError) -> str:
    """The hint for a Python without the worker's requirements (a system ``python3`` outside ``.venv``)."""
    return (
        f"handler.py: {exc} in {sys.executable}: the worker's packages are not installed for this Python. "
        "Run it with .venv/bin/python handler.py, or `make serve` (which creates .venv); "
        "elsewhere: pip install -r requirements.txt"
    )
