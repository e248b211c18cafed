"""``video``: a clip (MP4, MOV, WebM or Matroska; H.264, H.265, VP8, VP9, AV1 or MPEG-4), checked,
cut and resampled to the task's frame rate by :mod:`worker.video` into an H.264 MP4 that ComfyUI's
``LoadVideo`` reads; its own sound, if any, comes along as a WAV companion.

Its URL form goes through the one guarded fetcher with the image URLs' network settings
(``IMAGE_URL_TIMEOUT``, ``IMAGE_URL_DEADLINE``, ``ALLOW_PRIVATE_IMAGE_URLS``) and the video's byte cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.errors import InvalidInput
from worker.inputs.base import InputKind, PreparedInput, read_media
from worker.media_data import DataForm
from worker.video import decode_video

if TYPE_CHECKING:
    from worker.job_time import JobTime
    from worker.request.model import MediaInput
    from worker.settings import Limits

FORM = DataForm((("video", ("mp4", "webm", "quicktime", "x-matroska")),), InvalidInput)
_ACCEPT = "video/mp4,video/webm,video/quicktime,video/x-matroska;q=0.9,*/*;q=0.5"


def prepare(given: MediaInput, limits: Limits, time: JobTime) -> PreparedInput:
    data, source = read_media(given, limits, time, FORM, limits.max_video_bytes, KIND.name, _ACCEPT)
    video = decode_video(
        data, field=given.source_field, limits=limits, start=given.start, end=given.end, rate=given.rate, cover=given.cover, time_left=time
    )
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


KIND = InputKind(
    name="video", data_uri="data:video/<type>;base64,", loader="LoadVideo", prepare=prepare,
    max_seconds=lambda limits: limits.max_video_seconds, max_seconds_setting="MAX_VIDEO_SECONDS",
)  # fmt: skip
