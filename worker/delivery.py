"""How a job's files leave the worker: inline as base64, or uploaded to S3 with presigned links.

:func:`choose_delivery` decides once per job, from the job's ``output_mode`` or ``OUTPUT_MODE``;
``auto`` means S3 whenever the worker has it configured (so a video too large for the response
still arrives). Both providers take the same list of :class:`Artifact` and return the response's
fields for them: ``video`` / ``last_frame`` inline, or ``video_url`` (with its key, bucket and
expiry) / ``last_frame_url``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from worker.errors import OutputTooLarge
from worker.settings import Settings
from worker.storage import S3Storage, missing_settings

log = logging.getLogger(__name__)

#: Room for the response's fields other than the files (names, timings, JSON punctuation).
RESPONSE_OVERHEAD = 4096


@dataclass(frozen=True)
class Artifact:
    """One file for the response: ``name`` is its response field (``video``, ``last_frame``); a
    ``listed`` one is one item of a list field (``images``)."""

    name: str
    filename: str
    data: bytes
    content_type: str
    listed: bool = False

    @property
    def url_field(self) -> str:
        """Its field in S3 mode: ``video_url``, ``last_frame_url``; ``image_urls`` for listed images."""
        return f"{self.name.removesuffix('s')}_urls" if self.listed else f"{self.name}_url"


def _put(fields: dict[str, Any], artifact: Artifact, key: str, value: Any) -> None:
    if artifact.listed:
        fields.setdefault(key, []).append(value)
    else:
        fields[key] = value


class Delivery(Protocol):
    mode: str
    #: The ``timings`` entry of an upload that follows the reading (None: no upload).
    upload_lap: str | None

    def deliver(self, job_id: str, artifacts: Sequence[Artifact]) -> dict[str, Any]: ...


class InlineDelivery:
    """Files as base64 in the response, refused when the answer would pass RunPod's payload limit.

    RunPod drops results over 10 MB (/run) or 20 MB (/runsync) *silently*: the job then shows
    COMPLETED with no output. A clear error is better than a lost video.
    """

    mode = "base64"
    upload_lap = None

    def __init__(self, limit: int, *, s3_configured: bool):
        self.limit = limit
        self.s3_configured = s3_configured

    def deliver(self, job_id: str, artifacts: Sequence[Artifact]) -> dict[str, Any]:
        encoded_size = sum(4 * ((len(a.data) + 2) // 3) for a in artifacts)
        if encoded_size + RESPONSE_OVERHEAD > self.limit:
            raise OutputTooLarge(self._too_large(artifacts, encoded_size))
        fields: dict[str, Any] = {}
        for artifact in artifacts:
            _put(fields, artifact, artifact.name, base64.b64encode(artifact.data).decode("ascii"))
        return fields

    def _too_large(self, artifacts: Sequence[Artifact], encoded_size: int) -> str:
        raw = sum(len(a.data) for a in artifacts)
        names = list(dict.fromkeys(a.name.replace("_", " ") for a in artifacts))
        what = f"the {names[0]} is" if len(artifacts) == 1 else f"the {' and '.join(names)} are"
        return (
            f"{what} {raw / 1e6:.1f} MB ({encoded_size / 1e6:.1f} MB as base64), over the "
            f"{self.limit / 1e6:.1f} MB response limit (MAX_RESPONSE_BYTES; RunPod accepts 10 MB from /run and "
            "20 MB from /runsync); ask for fewer frames (options.length) or a smaller size (options.width/height), "
            + (S3_REMEDY_CONFIGURED if self.s3_configured else S3_REMEDY_UNCONFIGURED)
        )


S3_REMEDY_CONFIGURED = 'or ask for output_mode "s3" (or "auto"): this worker uploads to S3, which has no size limit'
S3_REMEDY_UNCONFIGURED = (
    "or configure S3 output, which has no size limit (BUCKET_ENDPOINT_URL, BUCKET_NAME, "
    "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY; see docs/deployment.md)"
)


class S3Delivery:
    """Files uploaded to ``<prefix>/<job id>/<file>``; the response carries presigned links."""

    mode = "s3"
    upload_lap = "s3_upload"

    def __init__(self, storage: S3Storage):
        self.storage = storage

    def deliver(self, job_id: str, artifacts: Sequence[Artifact]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for artifact in artifacts:
            stored = self.storage.upload(artifact.data, self.storage.key_for(job_id, artifact.filename), artifact.content_type)
            _put(fields, artifact, artifact.url_field, stored.url)
            if artifact.name == "video":
                fields.update(video_key=stored.key, video_bucket=stored.bucket, video_url_expires_in=stored.expires_in)
        return fields


def unavailable_modes(settings: Settings, storage: S3Storage | None) -> dict[str, str]:
    """The output modes a job may not ask for on this worker, each with why (for the request's check)."""
    if storage is not None:
        return {}
    return {"s3": f"S3 output is not configured (the operator sets {', '.join(missing_settings(settings.s3))})"}


def choose_delivery(requested: str | None, settings: Settings, storage: S3Storage | None) -> Delivery:
    """The job's delivery: its ``output_mode``, else ``OUTPUT_MODE``; ``auto`` is S3 when configured.

    ``requested`` was checked against :func:`unavailable_modes`, and ``OUTPUT_MODE=s3`` without S3
    stops the worker at boot, so ``s3`` always has a storage here.
    """
    mode = requested or settings.output_mode
    if mode == "auto":
        mode = "s3" if storage is not None else "base64"
    if mode == "s3" and storage is not None:
        return S3Delivery(storage)
    return InlineDelivery(settings.max_response_bytes, s3_configured=storage is not None)
