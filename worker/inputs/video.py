"""``video``: a clip (MP4, MOV, WebM or Matroska; H.264, H.265, VP8, VP9, AV1 or MPEG-4), checked,
cut and resampled to the task's frame rate by :mod:`worker.video` into an H.264 MP4 that ComfyUI's
``LoadVideo`` reads; its own sound, if any, comes along as a WAV companion.

Its URL form goes through the one guarded fetcher with the image URLs' network settings
(``IMAGE_URL_TIMEOUT``, ``IMAGE_URL_DEADLINE``, ``ALLOW_PRIVATE_IMAGE_URLS``) and the video's byte cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.download import FetchRules, fetch
from worker.errors import InvalidInput
from worker.inputs.base import InputKind, PreparedInput
from worker.media_data import DataForm, decode_field
from worker.url_guard import redact_url
from worker.video import decode_video

if TYPE_CHECKING:
    from worker.job_time import JobTime
    from worker.request.model import MediaInput
    from worker.settings import Limits

FORM = DataForm((("video", ("mp4", "webm", "quicktime", "x-matroska")),), InvalidInput)
_ACCEPT = "video/mp4,video/webm,video/quicktime,video/x-matroska;q=0.9,*/*;q=0.5"


def prepare(given: MediaInput, limits: Limits, time: JobTime) -> PreparedInput:
    field = given.source_field
    if given.b64 is not None:
        data = decode_field(given.b64, field, FORM, limits.max_video_bytes)
    else:
        body = bytearray()
        fetch(given.url or "", _rules(limits, field), body.extend, job_deadline=time.deadline, stop=time.stop)
        data = bytes(body)
    video = decode_video(
        data, field=field, limits=limits, start=given.start, end=given.end, rate=given.rate, cover=given.cover, time_left=time
    )
    source = f"{field} (base64)" if given.b64 is not None else f"{field} {redact_url(given.url or '')}"
    sound = None
    if video.audio_wav is not None:
        sound = PreparedInput(
            f"{given.field}_audio", "audio", video.audio_wav, ".wav", "audio/wav", f"{source}: its sound, {video.audio_seconds:g} s",
            seconds=video.audio_seconds,
        )  # fmt: skip
    return PreparedInput(
        given.field, KIND.name, video.mp4, ".mp4", "video/mp4", f"{source}: {video.description}", (video.width, video.height),
        seconds=video.seconds, frames=video.frames, companion=sound,
    )  # fmt: skip


def _rules(limits: Limits, field: str) -> FetchRules:
    return FetchRules(
        field=field,
        max_bytes=limits.max_video_bytes,
        timeout=limits.image_url_timeout,
        deadline=limits.image_url_deadline,
        deadline_setting="IMAGE_URL_DEADLINE",
        allow_private=limits.allow_private_image_urls,
        content="the video",
        accept=_ACCEPT,
        user_agent="wan22-worker (video_url fetch)",
        error=InvalidInput,
    )


KIND = InputKind(
    name="video", data_uri="data:video/<type>;base64,", loader="LoadVideo", prepare=prepare,
    max_seconds=lambda limits: limits.max_video_seconds, max_seconds_setting="MAX_VIDEO_SECONDS",
)  # fmt: skip
