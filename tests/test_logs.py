"""worker/logs.py: every line carries its job id and no base64 payload, in either alphabet.

Each case logs through :func:`configure_logging` in a fresh interpreter, as the worker does, and
reads what reached stderr.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from tests.harness import REPO

_LOG_ONE_LINE = """
import logging, sys
from worker.logs import JOB_ID, configure_logging
configure_logging("INFO")
JOB_ID.set("job-7")
logging.getLogger("wan22.test").info("value: %s end", sys.stdin.read())
"""


def logged(value: str) -> str:
    """What the worker's logging writes for one line that quotes ``value``."""
    done = subprocess.run(
        [sys.executable, "-c", _LOG_ONE_LINE], input=value, cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr


def _urlsafe_blob() -> str:
    """URL-safe base64 of random bytes, with ``-`` and ``_`` in it for sure."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(600)).decode()
        if "-" in text and "_" in text:
            return text


@pytest.mark.parametrize("alphabet", ["standard", "url-safe"])
def test_base64_payloads_are_cut_out_of_log_lines(alphabet: str) -> None:
    blob = base64.b64encode(os.urandom(600)).decode() if alphabet == "standard" else _urlsafe_blob()
    line = logged(blob)
    assert "[job-7] wan22.test: value: " in line and line.rstrip().endswith("end")
    assert f"<{len(blob)} chars of base64>" in line
    assert not [i for i in range(0, len(blob) - 40, 40) if blob[i : i + 40] in line]


def test_ordinary_text_with_dashes_and_underscores_stays() -> None:
    text = "loras[0].url: https://huggingface.co/org/repo/resolve/main/my_style-v2_high_noise.safetensors: 3 tensors"
    assert text in logged(text)
