"""Logs and secrets: what the worker prints over good and failed jobs holds no payload and no secret.

One worker (``python handler.py --rp_serve_api``, the double as its ComfyUI, ``LOG_LEVEL=DEBUG`` so
every line the worker's own code can write is written) runs with fake secrets in its environment,
including the S3 keys (``BUCKET_ACCESS_KEY_ID`` / ``BUCKET_SECRET_ACCESS_KEY`` without a bucket, so
the worker reads them but answers in base64) and ``RUNPOD_AI_API_KEY``, which RunPod sets in every
real worker. It serves:

- a good job with a textured image (its base64 and the video's base64 are both known);
- a good job whose ``image_url`` carries a signed query (``?X-Amz-Signature=…&token=…``), served by
  a local site through the test network guard, and one that is redirected with a signed query;
- bad input carrying a 3 MB base64 image (refused for another field, so the image is never
  decoded), a 3 MB base64 of a truncated PNG, and 3 MB of base64 that is no image;
- a non-object input holding the big base64 (RunPod's API answers 422 itself);
- a runtime error in ComfyUI (the double's ``runtime_error`` fault);
- ``image_url`` with a signed query pointing at a private address, and with ``user:password@``.

ComfyUI (the double, launched by the worker as its child) must have started with none of the
secrets in its environment (``/proc/<pid>/environ``) and with ``VHS_STRICT_PATHS=1``.

Then the worker's stdout/stderr (and ComfyUI's log file, whose tail the worker quotes in errors)
must contain no run of base64 long enough to be a payload, no window of the input image's or of the
output video's base64, no query string of any URL sent, and no value of any environment variable
whose name contains KEY, SECRET, TOKEN or PASSWORD. The answers sent to the client are checked for
the query strings and secrets too. The presigned ``video_url`` of S3 output is tested with the S3
code (tests of the S3 engineer), not here.
"""

from __future__ import annotations

import base64
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from tests.bad_inputs import PUBLIC_HOST
from tests.bad_inputs.network import ImageSite, guard_events, guarded_env
from tests.harness import comfy_child_pid, files_in, free_port, process_env, process_environ, start_worker_api, stop_worker_api

SIGNATURE = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
QUERY_TOKEN = "secretquerytoken42"
SIGNED_QUERY = f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAFAKECRED&X-Amz-Signature={SIGNATURE}&token={QUERY_TOKEN}"
URL_PASSWORD = "hunter2urlpassword"
FAKE_SECRETS = {
    "BUCKET_ACCESS_KEY_ID": "AKIAFAKEACCESSKEY77",
    "BUCKET_SECRET_ACCESS_KEY": "supersecretvalue123",
    "RUNPOD_AI_API_KEY": "rpa_FAKEAPIKEY0123456789",
    "HF_TOKEN": "hf_faketokenvalue456",
    "DATABASE_PASSWORD": "correcthorsebatterystaple",
    "MY_SERVICE_SECRET": "servicesecretvalue789",
}
#: Names whose values are secrets by convention.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.IGNORECASE)
#: A run of base64 alphabet this long in a log is a payload (the worker's filter cuts runs of 200).
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{120,}={0,2}")
WINDOW = 48


def _textured_png_b64(width: int, height: int, seed: int) -> str:
    """A noisy image, so its base64 is long and cannot be mistaken for anything else."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    return base64.b64encode(buf.getvalue()).decode()


def _windows(payload: str, count: int = 12) -> list[str]:
    """Slices of ``payload`` spread over it: if any appears in the log, some of the payload leaked."""
    step = max(1, (len(payload) - WINDOW) // count)
    return [payload[i : i + WINDOW] for i in range(0, len(payload) - WINDOW, step)][:count] + [payload[-WINDOW:]]


@dataclass
class Run:
    """What one worker printed and answered over the jobs of :func:`run`."""

    env: dict[str, str]
    worker_log: str
    logs: dict[str, str]  # worker stdout/stderr and ComfyUI's log file(s)
    answers: list[str]
    payloads: dict[str, str]  # base64 sent or received, by label
    comfy_environ: dict[str, str]  # the environment the ComfyUI child started with


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("logs")
    guard_log = tmp / "netguard.jsonl"
    log_path = tmp / "worker.log"
    small = {"width": 64, "height": 64, "length": 5}
    image = _textured_png_b64(320, 240, seed=1)
    big = _textured_png_b64(1024, 1024, seed=2)  # ~3 MB as base64
    truncated = base64.b64encode(base64.b64decode(big)[: len(big) // 2]).decode()
    not_an_image = base64.b64encode(np.random.default_rng(3).integers(0, 256, 2_000_000, dtype=np.uint8).tobytes()).decode()
    payloads = {"input image": image, "big image": big, "non-image": not_an_image}
    answers: list[str] = []

    with ImageSite() as site:
        env = {**process_env(tmp, LOG_LEVEL="DEBUG"), **FAKE_SECRETS, **guarded_env(guard_log, site.port)}
        env.pop("ALLOW_PRIVATE_IMAGE_URLS", None)
        for name in ("OUTPUT_MODE", "BUCKET_ENDPOINT_URL", "BUCKET_NAME"):
            env.pop(name, None)  # S3 stays unconfigured: the keys are read, the video goes out as base64
        api_port = free_port()
        with open(log_path, "wb") as out:
            proc = start_worker_api(env, api_port, out)
        try:
            assert proc.pid in [e["pid"] for e in guard_events(guard_log) if e["event"] == "loaded"]
            comfy_environ = process_environ(comfy_child_pid(proc.pid))

            def runsync(job_input: Any) -> dict[str, Any]:
                resp = requests.post(f"http://127.0.0.1:{api_port}/runsync", json={"input": job_input}, timeout=120)
                answers.append(resp.text)
                return resp.json()

            def completed(job_input: Any) -> None:
                done = runsync(job_input)
                assert done["status"] == "COMPLETED", done
                payloads[f"video {len(payloads)}"] = done["output"]["video"]

            def failed(job_input: Any, start: str) -> None:
                answer = runsync(job_input)
                assert answer["status"] == "FAILED" and answer["error"].startswith(start), answer

            # A full job, base64 in and out.
            completed({"prompt": "a cat on a beach", "image": image, "options": small})
            # image_url with a signed query, served; then one redirected with a signed query.
            completed({"prompt": "a cat", "image_url": f"http://{PUBLIC_HOST}/cat.png{SIGNED_QUERY}", "options": small})
            failed({"prompt": "a cat", "image_url": f"http://{PUBLIC_HOST}/redirect/loopback{SIGNED_QUERY}"}, "invalid_image: ")
            # Bad input carrying big base64 payloads.
            failed({"prompt": "a cat", "image": big, "options": {"width": 70}}, "invalid_input: options.width")
            failed({"prompt": "a cat", "image": truncated, "options": small}, "invalid_image: image: the PNG data is truncated")
            failed({"prompt": "a cat", "image": not_an_image, "options": small}, "invalid_image: image: ")
            resp = requests.post(f"http://127.0.0.1:{api_port}/runsync", json={"input": [big]}, timeout=60)
            assert resp.status_code == 422  # RunPod's API refuses it; its answer echoes the input, its log must not
            # A runtime error inside ComfyUI.
            fault = {"mode": "runtime_error"}
            requests.post(f"http://127.0.0.1:{env['COMFY_PORT']}/__double__/faults", json=fault, timeout=5).raise_for_status()
            failed({"prompt": "a cat", "image": image, "options": small}, "execution_failed: ")
            # Bad image_urls carrying secrets in the query and in the user info.
            failed({"prompt": "a cat", "image_url": f"http://10.0.0.1/cat.png{SIGNED_QUERY}"}, "invalid_image: image_url: http://10.0.0.1/cat.png?…: ")
            failed({"prompt": "a cat", "image_url": f"ftp://bucket.example.test/cat.png{SIGNED_QUERY}"}, "invalid_input: image_url: ")
            failed(
                {"prompt": "a cat", "image_url": f"http://admin:{URL_PASSWORD}@169.254.169.254/latest{SIGNED_QUERY}"},
                'invalid_input: image_url: "http://…@169.254.169.254/latest?…" has user info',
            )
            # The worker is still fine.
            completed({"prompt": "a last cat", "image": image, "options": {**small, "seed": 7}})
            time.sleep(0.5)  # let the last log lines reach the file
        finally:
            stop_worker_api(proc)
        assert [e for e in guard_events(guard_log) if e["event"] == "connect" and e["action"] not in ("local", "routed")] == []

    worker_log = log_path.read_text(encoding="utf-8", errors="replace")
    comfy_logs = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in Path(env["WORKER_DIR"]).glob("*.log")}
    assert files_in(Path(env["WORKER_DIR"]) / "input") == []
    return Run(env, worker_log, {"worker stdout/stderr": worker_log, **comfy_logs}, answers, payloads, comfy_environ)


def test_logs_hold_no_payload_no_query_string_and_no_secret(run: Run) -> None:
    # The capture is real: the log shows the jobs, their failures and the refused URLs.
    for expected in ("job done", "invalid_input", "invalid_image", "execution_failed", "image_url", "?…"):
        assert expected in run.worker_log, f"{expected!r} not in the worker's log: the test would prove nothing"

    secrets = {name: value for name, value in run.env.items() if SECRET_NAME.search(name) and len(value) >= 8}
    assert set(FAKE_SECRETS) <= set(secrets)
    forbidden = {
        **{f"env {name}": value for name, value in secrets.items()},
        "the signature": SIGNATURE,
        "the query token": QUERY_TOKEN,
        "a query string": "X-Amz-",
        "the URL's password": URL_PASSWORD,
    }
    for where, text in run.logs.items():
        for what, value in forbidden.items():
            assert value not in text, f"{what} appears in the {where}"
        runs = BASE64_RUN.findall(text)
        assert not runs, f"base64 payload in the {where}: {runs[0][:80]}…"
        for label, payload in run.payloads.items():
            assert not [w for w in _windows(payload) if w in text], f"part of the {label}'s base64 is in the {where}"

    # What went back to the client: no query string or secret either.
    for answer in run.answers:
        for what, value in forbidden.items():
            assert value not in answer, f"{what} appears in an answer: {answer[:300]}"


#: The line format of the root handler ``runpod.serverless.utils.rp_upload`` installs with
#: ``logging.basicConfig`` when ``import runpod`` runs: ``handler.py           :121  2026-… message``.
_SDK_ROOT_HANDLER_LINE = re.compile(r"^[\w.]+\.py\s*:\d+\s+\d{4}-\d\d-\d\d ", re.MULTILINE)


def test_every_log_line_goes_through_the_workers_filtered_handler_only(run: Run) -> None:
    duplicates = _SDK_ROOT_HANDLER_LINE.findall(run.worker_log)
    assert not duplicates, f"{len(duplicates)} lines printed by an unfiltered root handler, e.g. {duplicates[0]!r}"


def test_comfyui_starts_without_the_workers_secrets_and_with_strict_paths(run: Run) -> None:
    environ = run.comfy_environ
    assert environ["PATH"] == run.env["PATH"], "the environment read is ComfyUI's"
    secrets = {name: value for name, value in run.env.items() if SECRET_NAME.search(name) and len(value) >= 8}
    assert set(FAKE_SECRETS) <= set(secrets)
    assert not [name for name in secrets if name in environ]
    assert not [name for name, value in secrets.items() if any(value in v for v in environ.values())]
    assert not [name for name in environ if name.startswith(("BUCKET_", "RUNPOD_", "AWS_", "COMFY_", "WAN22_"))]
    assert environ["VHS_STRICT_PATHS"] == "1" and environ["HF_HUB_OFFLINE"] == "1"
