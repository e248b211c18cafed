"""S3 output through the whole job: the ComfyUI double as the worker's child, moto as the bucket.

Pipeline tests share one launched double (starting one per test costs ~0.7 s): each test builds
its own ``Runtime`` from its own environment with ``Runtime.create`` (so the storage is made from
settings as at boot) and borrows the running server and client. The last test runs the worker as
RunPod does (``handler.py --rp_serve_api``) with the S3 variables pointing at moto, and checks that
its log holds neither key nor a link's signature. How moto's credential checks are switched on is
described in ``tests/test_storage.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image

from tests.harness import decode_mp4, files_in, free_port, png_b64, process_env, start_worker_api, stop_worker_api, worker_env
from tests.s3_server import MotoS3
from worker.errors import InvalidInput, OutputTooLarge, StorageFailed
from worker.pipeline import Runtime, generate_video
from worker.settings import ConfigError, Settings

SMALL = {"width": 64, "height": 48, "length": 9, "seed": 5}
BASE_TIMINGS = {"prepare", "boot_wait", "upload", "comfyui", "queue_wait", "execution", "loading", "first_step", "output", "total"}


def _job(output_mode: str | None = None, **options) -> dict:
    job = {"prompt": "a red ball bounces", "image": png_b64(), "options": {**SMALL, **options}}
    if output_mode is not None:
        job["output_mode"] = output_mode
    return job


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One launched ComfyUI double for the module's pipeline tests."""
    env = worker_env(tmp_path_factory.mktemp("s3out"))
    runtime = Runtime.create(Settings.from_env(env))
    runtime.base_env = env  # type: ignore[attr-defined]
    runtime.server.start()
    try:
        yield runtime
    finally:
        runtime.server.stop()


@pytest.fixture
def runtime_with(comfy: Runtime):
    """A Runtime built from the base environment plus ``env``, on the shared ComfyUI double."""

    def make(**env: str) -> Runtime:
        runtime = Runtime.create(Settings.from_env({**comfy.base_env, **env}))  # type: ignore[attr-defined]
        return dataclasses.replace(runtime, server=comfy.server, client=comfy.client)

    return make


def _double_state(runtime: Runtime) -> dict:
    return requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()


def _assert_clean(runtime: Runtime) -> None:
    assert files_in(runtime.settings.comfy.input_dir) == []
    assert files_in(runtime.settings.comfy.output_dir) == []


def _assert_s3_response(out: dict, moto_s3: MotoS3, bucket: str, job_id: str, frames: int = 9) -> dict:
    """The S3 answer: a link instead of ``video``, every other field, the MP4 behind the link."""
    assert "video" not in out
    assert out["video_key"] == f"wan22/{job_id}/{out['filename']}" and out["video_bucket"] == bucket
    assert out["video_url_expires_in"] == 3600
    assert {"filename", "prompt_id", "files_count", "seed", "width", "height", "length", "frame_rate"} <= set(out)
    assert set(out["timings"]) == BASE_TIMINGS | {"s3_upload"}
    assert moto_s3.client().head_object(Bucket=bucket, Key=out["video_key"])["ContentType"] == "video/mp4"
    fetched = requests.get(out["video_url"], timeout=10)
    assert fetched.status_code == 200
    video = decode_mp4(fetched.content)
    assert (video["codec"], video["width"], video["height"], video["frames"]) == ("h264", out["width"], out["height"], frames)
    return video


def test_output_mode_s3_returns_a_link_to_the_requested_video(moto_s3: MotoS3, runtime_with) -> None:
    bucket = moto_s3.new_bucket()
    runtime = runtime_with(**moto_s3.env(bucket), OUTPUT_MODE="base64")  # the job's field wins over the default
    out = generate_video(_job("s3"), "job-s3", runtime)
    video = _assert_s3_response(out, moto_s3, bucket, "job-s3")
    assert (out["width"], out["height"], out["length"], out["seed"], out["files_count"]) == (64, 48, 9, 5, 1)
    assert video["rate"] == 24.0
    _assert_clean(runtime)


def test_the_last_frame_is_uploaded_beside_the_video(moto_s3: MotoS3, runtime_with) -> None:
    bucket = moto_s3.new_bucket()
    runtime = runtime_with(**moto_s3.env(bucket))
    out = generate_video({**_job("s3"), "return_last_frame": True}, "job-lf", runtime)
    _assert_s3_response(out, moto_s3, bucket, "job-lf")
    assert "last_frame" not in out
    key = out["last_frame_url"].split("?")[0].split(f"/{bucket}/", 1)[1]
    assert key.startswith("wan22/job-lf/") and key.endswith("_.png")
    assert moto_s3.client().head_object(Bucket=bucket, Key=key)["ContentType"] == "image/png"
    fetched = requests.get(out["last_frame_url"], timeout=10)
    with Image.open(io.BytesIO(fetched.content)) as frame:
        assert frame.size == (out["width"], out["height"])
    _assert_clean(runtime)


def test_auto_uploads_whenever_s3_is_configured(moto_s3: MotoS3, runtime_with) -> None:
    bucket = moto_s3.new_bucket()
    runtime = runtime_with(**moto_s3.env(bucket))  # OUTPUT_MODE defaults to auto
    _assert_s3_response(generate_video(_job(), "job-auto", runtime), moto_s3, bucket, "job-auto")
    _assert_s3_response(generate_video(_job("auto", seed=6), "job-auto2", runtime), moto_s3, bucket, "job-auto2")
    _assert_clean(runtime)


def test_auto_without_s3_returns_base64(runtime_with) -> None:
    runtime = runtime_with()
    assert "s3" not in runtime.delivery.providers and "s3" in runtime.delivery.unavailable
    out = generate_video(_job("auto"), "job-b64", runtime)
    assert "video_url" not in out and set(out["timings"]) == BASE_TIMINGS
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 9
    _assert_clean(runtime)


def test_auto_over_the_response_limit_uploads_to_s3(moto_s3: MotoS3, runtime_with) -> None:
    bucket = moto_s3.new_bucket()
    runtime = runtime_with(**moto_s3.env(bucket), MAX_RESPONSE_BYTES="5000")
    out = generate_video(_job(length=17), "job-big", runtime)
    _assert_s3_response(out, moto_s3, bucket, "job-big", frames=17)
    _assert_clean(runtime)


def test_base64_over_the_limit_is_refused_and_points_at_s3(moto_s3: MotoS3, runtime_with) -> None:
    runtime = runtime_with(**moto_s3.env(moto_s3.new_bucket()), MAX_RESPONSE_BYTES="5000")
    with pytest.raises(OutputTooLarge, match=r'MAX_RESPONSE_BYTES.*output_mode "s3"'):
        generate_video(_job("base64"), "job-forced", runtime)
    _assert_clean(runtime)


def test_auto_without_s3_over_the_limit_says_s3_can_be_configured(runtime_with) -> None:
    runtime = runtime_with(MAX_RESPONSE_BYTES="5000")
    with pytest.raises(OutputTooLarge) as err:
        generate_video(_job(), "job-nos3", runtime)
    assert "configure S3 output" in str(err.value) and "BUCKET_ENDPOINT_URL" in str(err.value)
    _assert_clean(runtime)


def test_s3_without_configuration_is_refused_before_comfyui(runtime_with) -> None:
    runtime = runtime_with(BUCKET_ENDPOINT_URL="https://r2.example", BUCKET_NAME="videos")  # keys missing
    before = _double_state(runtime)
    with pytest.raises(InvalidInput) as err:
        generate_video(_job("s3", width=70), "job-nocfg", runtime)
    message = str(err.value)
    assert "options.width: 70 is not a multiple of 16" in message  # reported together with the other problems
    assert 'output_mode: "s3" is not available on this worker: S3 output is not configured' in message
    assert "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY)" in message and message.endswith("(allowed: base64, auto)")
    after = _double_state(runtime)
    assert (len(after["prompts"]), len(after["uploads"])) == (len(before["prompts"]), len(before["uploads"]))
    _assert_clean(runtime)


def test_unknown_output_mode_lists_the_allowed_values(runtime_with) -> None:
    with pytest.raises(InvalidInput, match=r'^output_mode: "ftp" is not one of the allowed values \(allowed: base64, s3, auto\)$'):
        generate_video(_job("ftp"), "job-ftp", runtime_with())


def test_output_mode_s3_default_without_configuration_stops_the_worker_at_boot() -> None:
    with pytest.raises(ConfigError, match=r"OUTPUT_MODE='s3' needs S3 output configured: BUCKET_ACCESS_KEY_ID"):
        Settings.from_env({"OUTPUT_MODE": "s3", "BUCKET_NAME": "videos"})


def test_missing_bucket_fails_the_job_cleans_up_and_the_next_job_works(moto_s3: MotoS3, runtime_with) -> None:
    runtime = runtime_with(**moto_s3.env("bucket-that-is-not-there"))
    with pytest.raises(StorageFailed, match=r"bucket 'bucket-that-is-not-there' \(key wan22/job-nb/.*NoSuchBucket"):
        generate_video(_job("s3"), "job-nb", runtime)
    _assert_clean(runtime)
    assert generate_video(_job("base64"), "job-after", runtime)["video"]


def test_unreachable_endpoint_fails_fast_and_cleans_up(runtime_with) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    runtime = runtime_with(BUCKET_ENDPOINT_URL=endpoint, BUCKET_NAME="vids", BUCKET_ACCESS_KEY_ID="AKIAX" * 4,
                           BUCKET_SECRET_ACCESS_KEY="s" * 40)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(StorageFailed) as err:
        generate_video(_job(), "job-down", runtime)
    assert time.monotonic() - started < 10
    assert f"at {endpoint} failed: could not connect" in str(err.value) and "s" * 40 not in str(err.value)
    _assert_clean(runtime)


# --- Through RunPod's local API ----------------------------------------------------------------------


def test_runsync_with_s3_answers_a_link_and_logs_no_secret(moto_s3: MotoS3, tmp_path: Path) -> None:
    """Credential checks on: the upload must be signed with the configured secret to pass."""
    bucket = moto_s3.new_bucket()
    with moto_s3.credentials_checked() as (key, secret):
        env = process_env(tmp_path, **moto_s3.env(bucket, key, secret), LOG_LEVEL="DEBUG")
        log_path = tmp_path / "worker.log"
        api_port = free_port()
        with open(log_path, "wb") as log_file:
            proc = start_worker_api(env, api_port, log_file)
        try:
            job = {"input": _job()}
            body = requests.post(f"http://127.0.0.1:{api_port}/runsync", json=job, timeout=120).json()
        finally:
            stop_worker_api(proc)
    assert body["status"] == "COMPLETED", body.get("error")
    out = body["output"]
    assert "video" not in out and out["video_bucket"] == bucket and "s3_upload" in out["timings"]
    video = decode_mp4(requests.get(out["video_url"], timeout=10).content)
    assert (video["width"], video["height"], video["frames"]) == (64, 48, 9)
    signature = parse_qs(urlsplit(out["video_url"]).query)["X-Amz-Signature"][0]
    log = log_path.read_text(errors="replace")
    assert "uploaded" in log and bucket in log  # the upload is logged, by bucket and key only
    for secret_text in (secret, key, signature, out["video_url"]):
        assert secret_text not in log
    assert files_in(Path(env["WORKER_DIR"]) / "output") == []
