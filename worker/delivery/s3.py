"""``s3``: a job's files put in an S3-compatible bucket; the answer carries presigned GET URLs.

Works with AWS S3, Cloudflare R2, MinIO and other S3 APIs through boto3 directly (RunPod's
``rp_upload`` labels an MP4 ``image/mp4`` and silently writes to a local folder when credentials
are missing). One :class:`S3Storage` lives for the whole worker; its boto3 client is made on first
use, under a lock, and then shared by every job (boto3 clients are thread-safe).

Time is bounded: connect and read timeouts plus a single retry, so an unreachable endpoint fails
the job in about ten seconds instead of botocore's default minutes. Every failure becomes one
:class:`StorageFailed` naming the endpoint (never its credentials) and the bucket. Neither key nor
a presigned URL's query string is ever logged; botocore's own DEBUG logging (which prints signed
headers and the request body) is held at WARNING.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from comfy_bootstrap.config import EnvReader, parse_url
from worker.delivery.base import Artifact, ProviderSpec, put
from worker.errors import StorageFailed

log = logging.getLogger(__name__)

NAME = "s3"

#: Seconds to open a connection; with ``ATTEMPTS`` this bounds an unreachable endpoint (~10 s).
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for the answer once the body is sent (sending itself is not cut short).
READ_TIMEOUT = 15.0
#: Attempts per request, the first included (botocore's ``total_max_attempts``).
ATTEMPTS = 2

_QUIET_LOGGERS = ("botocore", "boto3", "s3transfer")


@dataclass(frozen=True)
class S3Settings:
    """Where outputs go (AWS S3, Cloudflare R2, MinIO, ...).

    Names follow RunPod's convention (``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID``,
    ``BUCKET_SECRET_ACCESS_KEY``). The bucket is ``BUCKET_NAME`` or, as RunPod's own helpers do,
    the first path segment of the endpoint URL (``https://host/<bucket>``). The keys never
    appear in ``repr`` or the boot log.
    """

    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    bucket: str | None = None
    region: str | None = None
    prefix: str = "wan22"
    url_expiry: int = 3600

    @property
    def configured(self) -> bool:
        """True when a bucket is known and credentials are given (else ``auto`` means base64)."""
        return bool(self.bucket and self.access_key_id and self.secret_access_key)


def read_settings(reader: EnvReader) -> S3Settings:
    """S3 settings; the bucket comes from BUCKET_NAME or the endpoint URL's first path segment."""
    d = S3Settings()
    endpoint = reader.get("BUCKET_ENDPOINT_URL", parse_url, None)
    bucket = reader.get("BUCKET_NAME", str, None)
    if endpoint and not bucket:
        parsed = urlsplit(endpoint)
        segment = parsed.path.strip("/").split("/", 1)[0]
        if segment:
            bucket = segment
            endpoint = urlunsplit((parsed.scheme, parsed.netloc, "", "", ""))
    return S3Settings(
        endpoint_url=endpoint,
        access_key_id=reader.get("BUCKET_ACCESS_KEY_ID", str, None),
        secret_access_key=reader.get("BUCKET_SECRET_ACCESS_KEY", str, None),
        bucket=bucket,
        region=reader.get("BUCKET_REGION", str, None),
        prefix=reader.get("S3_PREFIX", str, d.prefix).strip("/"),
        url_expiry=reader.get("S3_URL_EXPIRY", int, d.url_expiry, lo=1, hi=604800),
    )


@dataclass(frozen=True)
class StoredFile:
    """Where an uploaded file is, and the link that fetches it until it expires."""

    url: str
    key: str
    bucket: str
    expires_in: int


def missing_settings(s3: S3Settings) -> list[str]:
    """The variables an operator still has to set for S3 output (empty when configured)."""
    missing = []
    if not s3.bucket:
        missing.append("BUCKET_NAME (or the bucket as the path of BUCKET_ENDPOINT_URL)")
    if not s3.access_key_id:
        missing.append("BUCKET_ACCESS_KEY_ID")
    if not s3.secret_access_key:
        missing.append("BUCKET_SECRET_ACCESS_KEY")
    return missing


def safe_endpoint(s3: S3Settings) -> str:
    """The endpoint as shown in logs and errors: scheme, host and port only (no user info, path or query)."""
    if not s3.endpoint_url:
        return f"AWS S3 ({s3.region or 'default region'})"
    parts = urlsplit(s3.endpoint_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def object_key(prefix: str, job_id: str, filename: str) -> str:
    """``<prefix>/<job id>/<file>``; characters other than letters, digits, ``._-`` become ``_``."""
    parts = [prefix.strip("/"), _safe_segment(job_id), _safe_segment(filename)]
    return "/".join(part for part in parts if part)


def _safe_segment(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    return "_" if cleaned.strip(".") == "" else cleaned


class S3Storage:
    """Uploads files to the configured bucket; ``upload`` is safe to call from several threads."""

    def __init__(self, s3: S3Settings):
        if not s3.configured:
            raise ValueError(f"S3 output is not configured: missing {', '.join(missing_settings(s3))}")
        self.settings = s3
        self.bucket: str = s3.bucket or ""
        self.endpoint = safe_endpoint(s3)
        self._client: Any = None
        self._lock = threading.Lock()

    def key_for(self, job_id: str, filename: str) -> str:
        return object_key(self.settings.prefix, job_id, filename)

    def upload(self, data: bytes, key: str, content_type: str = "video/mp4") -> StoredFile:
        """Put ``data`` at ``key``; return a presigned GET URL for it."""
        started = time.monotonic()
        try:
            client = self._get_client()
            client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.settings.url_expiry
            )
        except Exception as exc:  # botocore raises many unrelated types; each becomes one clear error
            raise StorageFailed(self._failure(key, exc)) from exc
        log.info(
            "uploaded %d bytes to bucket %s, key %s at %s in %.2f s (link valid %d s)",
            len(data), self.bucket, key, self.endpoint, time.monotonic() - started, self.settings.url_expiry,
        )  # fmt: skip
        return StoredFile(url=url, key=key, bucket=self.bucket, expires_in=self.settings.url_expiry)

    def _get_client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = _make_client(self.settings)
                client = self._client
        return client

    def _failure(self, key: str, exc: Exception) -> str:
        reason = _scrub(_explain(exc), self.settings)
        return f"uploading {key.rsplit('/', 1)[-1]} to bucket {self.bucket!r} (key {key}) at {self.endpoint} failed: {reason}"


def _make_client(s3: S3Settings) -> Any:
    import boto3  # imported on first upload: base64-only workers never pay for it
    from botocore.config import Config

    for name in _QUIET_LOGGERS:  # their DEBUG output holds signed headers and the whole body
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.level, logging.WARNING))
    config = Config(
        signature_version="s3v4",  # presigned URLs: SigV4 is what R2 and MinIO accept; 7 days at most
        # Path-style for custom endpoints (MinIO has no per-bucket DNS names); AWS picks its own.
        s3={"addressing_style": "path" if s3.endpoint_url else "auto"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
        # botocore >= 1.36 adds CRC32 checksums that several S3-compatible services refuse.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        region_name=s3.region,
        config=config,
    )


#: What an S3 error code means for the operator, and what to check.
_CODE_HINTS: dict[str, str] = {
    "NoSuchBucket": "the bucket does not exist (check BUCKET_NAME, or the bucket in BUCKET_ENDPOINT_URL's path)",
    "AccessDenied": "access denied: the key may not write to this bucket (it needs s3:PutObject and s3:GetObject)",
    "AllAccessDisabled": "access to this bucket is disabled",
    "InvalidAccessKeyId": (
        "the access key is unknown to this endpoint (check BUCKET_ACCESS_KEY_ID, and that "
        "BUCKET_ENDPOINT_URL is the provider that issued it)"
    ),
    "SignatureDoesNotMatch": "the secret key does not match the access key (check BUCKET_SECRET_ACCESS_KEY)",
    "InvalidToken": "the credentials are not valid (check BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY)",
    "ExpiredToken": "the credentials have expired",
    "AuthorizationHeaderMalformed": "the request was signed for the wrong region (set BUCKET_REGION to the bucket's region)",
    "PermanentRedirect": "the bucket is in another region or at another endpoint (set BUCKET_REGION or BUCKET_ENDPOINT_URL)",
    "InvalidBucketName": "the bucket name is not valid (check BUCKET_NAME)",
}


def _explain(exc: Exception) -> str:
    """One sentence about what went wrong, from the botocore exception."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        hint = _CODE_HINTS.get(code) or str(error.get("Message") or "no message")
        return f"{code or 'error'} (HTTP {status}): {hint}"
    if isinstance(exc, ConnectTimeoutError):
        return f"connection timed out after {CONNECT_TIMEOUT:g} s ({ATTEMPTS} attempts): check BUCKET_ENDPOINT_URL and the network"
    if isinstance(exc, ReadTimeoutError):
        return f"the endpoint did not answer within {READ_TIMEOUT:g} s ({ATTEMPTS} attempts)"
    if isinstance(exc, EndpointConnectionError):
        cause = _root_cause(exc)
        return f"could not connect ({cause}): check BUCKET_ENDPOINT_URL and that the endpoint is reachable"
    return f"{type(exc).__name__}: {exc}"


def _root_cause(exc: BaseException) -> str:
    """The innermost reason (``[Errno 111] Connection refused``, a DNS failure), without URLs."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen)
    match = re.search(r"\[Errno -?\d+\][^\n)]*", text)
    if match:
        return match.group(0).strip().rstrip("'\"")
    return type(seen).__name__ if seen is not exc else "connection error"


def _scrub(text: str, s3: S3Settings) -> str:
    """Remove credentials and URL query strings (presigned signatures) from an error text."""
    for secret in (s3.secret_access_key, s3.access_key_id):
        if secret and len(secret) >= 8:  # real keys are 16+ characters; "a" would garble the text
            text = text.replace(secret, "***")
    return re.sub(r"(https?://[^\s\"'?]+)\?[^\s\"']*", r"\1?…", text)


class S3Delivery:
    """Files uploaded to ``<prefix>/<job id>/<file>``; the answer carries presigned links."""

    mode = NAME
    upload_lap = "s3_upload"

    def __init__(self, storage: S3Storage):
        self.storage = storage

    def deliver(self, job_id: str, artifacts: Sequence[Artifact]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for artifact in artifacts:
            stored = self.storage.upload(artifact.data, self.storage.key_for(job_id, artifact.filename), artifact.content_type)
            put(fields, artifact, artifact.url_field, stored.url)
            if artifact.name == "video":
                fields.update(video_key=stored.key, video_bucket=stored.bucket, video_url_expires_in=stored.expires_in)
        return fields


def _unavailable(s3: S3Settings) -> str | None:
    return None if s3.configured else f"S3 output is not configured (the operator sets {', '.join(missing_settings(s3))})"


def _half_done(s3: S3Settings) -> str | None:
    """A setup begun but not finished is worth a warning at boot (none at all is not)."""
    if s3.configured or not (s3.endpoint_url or s3.bucket or s3.access_key_id or s3.secret_access_key):
        return None
    return f"S3 output is off, files go out as base64: missing {', '.join(missing_settings(s3))}"


def _create(s3: S3Settings, remedy: str) -> S3Delivery:
    """The uploader (its boto3 client is made on first use)."""
    log.info("S3 output: bucket %s at %s, keys %s/<job id>/<file>, links valid %d s", s3.bucket, safe_endpoint(s3), s3.prefix, s3.url_expiry)
    return S3Delivery(S3Storage(s3))


SPEC = ProviderSpec(
    name=NAME,
    read_settings=read_settings,
    unavailable=_unavailable,
    create=_create,
    boot_warning=_half_done,
    setup="S3 output configured: BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY and BUCKET_NAME (or the bucket as the path of BUCKET_ENDPOINT_URL)",
    auto_rank=1,
    large_file_advice=(
        'or ask for output_mode "s3" (or "auto"): this worker uploads to S3, which has no size limit',
        "or configure S3 output, which has no size limit (BUCKET_ENDPOINT_URL, BUCKET_NAME, "
        "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY; see docs/deployment.md)",
    ),
)
