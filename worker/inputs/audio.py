"""``audio``: a sound track (WAV, MP3, FLAC, OGG, AAC, M4A, or the audio of an MP4, MOV or WebM),
checked and cut by :mod:`worker.audio` into 16-bit PCM WAV that ComfyUI's ``LoadAudio`` reads.

Its URL form goes through the one guarded fetcher with the image URLs' network settings
(``IMAGE_URL_TIMEOUT``, ``IMAGE_URL_DEADLINE``, ``ALLOW_PRIVATE_IMAGE_URLS``) and the audio's byte cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.audio import decode_audio
from worker.errors import InvalidInput
from worker.inputs.base import InputKind, PreparedInput, read_media
from worker.media_data import DataForm

if TYPE_CHECKING:
    from worker.job_time import JobTime
    from worker.request.model import MediaInput
    from worker.settings import Limits

FORM = DataForm(
    (("audio", ("wav", "x-wav", "wave", "mpeg", "mp3", "flac", "x-flac", "ogg", "opus", "aac", "mp4", "x-m4a", "m4a", "webm")),
     ("video", ("mp4", "quicktime", "webm"))),
    InvalidInput,
)  # fmt: skip
_ACCEPT = "audio/*,video/mp4;q=0.9,video/webm;q=0.9,video/quicktime;q=0.9,*/*;q=0.5"


def prepare(given: MediaInput, limits: Limits, time: JobTime) -> PreparedInput:
    data, source = read_media(given, limits, time, FORM, limits.max_audio_bytes, KIND.name, _ACCEPT)
    audio = decode_audio(
        data, field=given.source_field, max_bytes=limits.max_audio_bytes, max_seconds=limits.max_audio_seconds,
        start=given.start, end=given.end,
    )  # fmt: skip
    return PreparedInput(given.field, KIND.name, audio.wav, ".wav", "audio/wav", f"{source}: {audio.description}", seconds=audio.seconds)


KIND = InputKind(
    name="audio", data_uri="data:audio/<type>;base64,", loader="LoadAudio", prepare=prepare,
    max_seconds=lambda limits: limits.max_audio_seconds, max_seconds_setting="MAX_AUDIO_SECONDS",
)  # fmt: skip
