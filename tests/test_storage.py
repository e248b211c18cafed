"""worker.storage against a real S3 API (moto in server mode on 127.0.0.1, ``tests/s3_server.py``), over real HTTP.

The wrong-keys tests switch moto's credential checks on (``MotoS3.credentials_checked``); links
are fetched with the checks off, because moto 5.2.5 cannot verify presigned signatures.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.harness import free_port
from tests.s3_server import OPEN_KEY, OPEN_SECRET, MotoS3
from worker.delivery import s3 as storage_module
from worker.delivery.s3 import S3Settings, S3Storage, StoredFile, missing_settings, object_key, safe_endpoint
from worker.errors import StorageFailed
from worker.settings import Settings

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2avc1mp41"




def fake_mp4(size: int = 300_000) -> bytes:
    return MP4_HEAD + os.urandom(size - len(MP4_HEAD))


def _failure(storage: S3Storage, data: bytes = b"x" * 100, key: str = "wan22/job/x.mp4") -> str:
    with pytest.raises(StorageFailed) as err:
        storage.upload(data, key)
    assert err.value.code == "storage_failed"
    return str(err.value)


# --- Upload and link ------------------------------------------------------------------------------


def test_upload_puts_the_key_as_video_mp4_and_the_link_downloads_the_same_bytes(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    storage = S3Storage(moto_s3.settings(bucket))
    data = fake_mp4()
    stored = storage.upload(data, "wan22/job-1/wan22_job-1_00001.mp4")
    assert (stored.key, stored.bucket, stored.expires_in) == ("wan22/job-1/wan22_job-1_00001.mp4", bucket, 3600)
    head = moto_s3.client().head_object(Bucket=bucket, Key=stored.key)
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == len(data)
    # path-style link on the configured endpoint, fetched over real HTTP without any credentials
    assert stored.url.startswith(f"{moto_s3.endpoint}/{bucket}/wan22/job-1/wan22_job-1_00001.mp4?")
    got = requests.get(stored.url, timeout=10)
    assert got.status_code == 200 and got.content == data
    assert got.headers["Content-Type"] == "video/mp4"


def test_link_carries_the_configured_expiry_and_a_sigv4_signature(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    stored = S3Storage(moto_s3.settings(bucket, url_expiry=120)).upload(fake_mp4(1000), "k/v.mp4")
    query = parse_qs(urlsplit(stored.url).query)
    assert query["X-Amz-Expires"] == ["120"] and stored.expires_in == 120
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and len(query["X-Amz-Signature"][0]) == 64
    assert query["X-Amz-Credential"][0].startswith(f"{OPEN_KEY}/")  # the key id is public in a link; the secret never
    assert (stored.key, stored.bucket) == ("k/v.mp4", bucket)


def test_bucket_named_by_the_endpoint_path_receives_the_upload(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    env = {**moto_s3.env(bucket), "BUCKET_ENDPOINT_URL": f"{moto_s3.endpoint}/{bucket}"}
    del env["BUCKET_NAME"]
    s3 = Settings.from_env(env).delivery["s3"]
    assert (s3.bucket, s3.endpoint_url) == (bucket, moto_s3.endpoint)
    stored = S3Storage(s3).upload(fake_mp4(2000), "p/j/f.mp4")
    assert stored.bucket == bucket
    assert moto_s3.client().get_object(Bucket=bucket, Key="p/j/f.mp4")["ContentType"] == "video/mp4"


def test_one_client_is_made_lazily_and_shared_by_concurrent_uploads(moto_s3: MotoS3, monkeypatch) -> None:
    made: list[object] = []
    real = storage_module._make_client

    def counting(s3: S3Settings):
        time.sleep(0.05)  # widen the window in which two threads could both make one
        made.append(real(s3))
        return made[-1]

    monkeypatch.setattr(storage_module, "_make_client", counting)
    bucket = moto_s3.new_bucket()
    storage = S3Storage(moto_s3.settings(bucket))
    assert made == []  # nothing is made (nor boto3 touched) until the first upload
    results: list[StoredFile] = []
    threads = [threading.Thread(target=lambda i=i: results.append(storage.upload(fake_mp4(5000), f"t/{i}.mp4"))) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 6 and len(made) == 1
    listed = moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == [f"t/{i}.mp4" for i in range(6)]


def test_client_has_bounded_timeouts_and_retries(moto_s3: MotoS3) -> None:
    storage = S3Storage(moto_s3.settings(moto_s3.new_bucket()))
    config = storage._get_client().meta.config
    assert (config.connect_timeout, config.read_timeout) == (storage_module.CONNECT_TIMEOUT, storage_module.READ_TIMEOUT)
    assert config.retries == {"total_max_attempts": storage_module.ATTEMPTS, "mode": "standard"}
    assert storage_module.CONNECT_TIMEOUT * storage_module.ATTEMPTS <= 15  # an unreachable endpoint: ~10 s
    assert config.signature_version == "s3v4" and config.s3 == {"addressing_style": "path"}


# --- Failures ---------------------------------------------------------------------------------------


def test_missing_bucket_is_named_with_the_endpoint(moto_s3: MotoS3) -> None:
    message = _failure(S3Storage(moto_s3.settings("no-such-bucket-here")))
    assert "bucket 'no-such-bucket-here'" in message and moto_s3.endpoint in message
    assert "NoSuchBucket (HTTP 404): the bucket does not exist (check BUCKET_NAME" in message
    assert OPEN_SECRET not in message and OPEN_KEY not in message


def test_wrong_keys_are_refused_when_moto_checks_credentials(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    with moto_s3.credentials_checked() as (key, secret):
        good = S3Storage(moto_s3.settings(bucket, access_key_id=key, secret_access_key=secret))
        assert good.upload(fake_mp4(1000), "ok.mp4").key == "ok.mp4"  # the checks pass with the right pair

        unknown = _failure(S3Storage(moto_s3.settings(bucket, access_key_id="AKIAUNKNOWNKEY000000", secret_access_key=secret)))
        assert "InvalidAccessKeyId (HTTP 403)" in unknown and "BUCKET_ACCESS_KEY_ID" in unknown
        assert f"bucket '{bucket}'" in unknown and moto_s3.endpoint in unknown

        wrong_secret = "wrong/secret/" + "x" * 27
        mismatch = _failure(S3Storage(moto_s3.settings(bucket, access_key_id=key, secret_access_key=wrong_secret)))
        assert "SignatureDoesNotMatch (HTTP 403)" in mismatch and "BUCKET_SECRET_ACCESS_KEY" in mismatch
        for text in (unknown, mismatch):
            assert secret not in text and wrong_secret not in text and key not in text


def test_closed_port_fails_fast_naming_endpoint_and_bucket() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = S3Storage(S3Settings(endpoint_url=endpoint, access_key_id="a", secret_access_key="b", bucket="vids"))
    started = time.monotonic()
    message = _failure(storage)
    assert time.monotonic() - started < 5
    assert message.startswith(f"uploading x.mp4 to bucket 'vids' (key wan22/job/x.mp4) at {endpoint} failed: could not connect")
    assert "Connection refused" in message and "BUCKET_ENDPOINT_URL" in message


@pytest.fixture
def silent_listener() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A port that takes TCP connections and never answers (a hung endpoint)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    yield server, accepted
    for conn in accepted:
        conn.close()
    server.close()


def test_endpoint_that_never_answers_fails_within_the_read_timeout_and_retries(silent_listener, monkeypatch) -> None:
    monkeypatch.setattr(storage_module, "READ_TIMEOUT", 0.5)
    server, _ = silent_listener
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    storage = S3Storage(S3Settings(endpoint_url=endpoint, access_key_id="a", secret_access_key="b", bucket="vids"))
    started = time.monotonic()
    message = _failure(storage)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 5  # two attempts of 0.5 s (and a short backoff), not botocore's default minutes
    assert "did not answer within 0.5 s (2 attempts)" in message and endpoint in message


def test_connection_that_never_opens_fails_within_the_connect_timeout(monkeypatch) -> None:
    """A listener whose accept queue is full drops new SYNs, as a firewalled host does."""
    monkeypatch.setattr(storage_module, "CONNECT_TIMEOUT", 0.3)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the backlog; later connects hang in SYN-SENT
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(server.getsockname())
            fillers.append(filler)
        time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        storage = S3Storage(S3Settings(endpoint_url=endpoint, access_key_id="a", secret_access_key="b", bucket="vids"))
        started = time.monotonic()
        message = _failure(storage)
        assert time.monotonic() - started < 5
        assert "connection timed out after 0.3 s (2 attempts)" in message
    finally:
        for filler in fillers:
            filler.close()
        server.close()


# --- Names, keys and texts -----------------------------------------------------------------------------


def test_object_keys_are_prefix_job_file_with_unsafe_characters_replaced() -> None:
    assert object_key("wan22", "sync-1a2b-u1", "wan22_x_00001.mp4") == "wan22/sync-1a2b-u1/wan22_x_00001.mp4"
    assert object_key("", "job", "f.mp4") == "job/f.mp4"
    assert object_key("a/b/", "../etc", "x y?.mp4") == "a/b/.._etc/x_y_.mp4"
    assert object_key("p", "..", "f.mp4") == "p/_/f.mp4"


def test_endpoint_is_shown_without_credentials_path_or_query() -> None:
    s3 = S3Settings(endpoint_url="https://user:pass@minio.example:9000/bucket?token=x")
    assert safe_endpoint(s3) == "https://minio.example:9000"
    assert safe_endpoint(S3Settings(region="eu-west-1")) == "AWS S3 (eu-west-1)"


def test_unconfigured_storage_names_what_is_missing() -> None:
    s3 = S3Settings(endpoint_url="https://r2.example")
    assert missing_settings(s3) == [
        "BUCKET_NAME (or the bucket as the path of BUCKET_ENDPOINT_URL)", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="BUCKET_ACCESS_KEY_ID"):
        S3Storage(s3)


def test_error_texts_lose_credentials_and_url_queries() -> None:
    s3 = S3Settings(access_key_id="AKIA12345678", secret_access_key="s3cr3t/value/0123")
    text = storage_module._scrub('key AKIA12345678 secret s3cr3t/value/0123 url "http://h:1/b/k.mp4?X-Amz-Signature=abc&x=1" end', s3)
    assert text == 'key *** secret *** url "http://h:1/b/k.mp4?…" end'
    assert storage_module._scrub("a b", S3Settings(access_key_id="a", secret_access_key="b")) == "a b"  # too short to be keys
