"""The media a job can bring, one module per kind, registered by name.

An input kind (:class:`worker.inputs.base.InputKind`) owns how its file is given (base64 or
``<field>_url``), checked and decoded, and which node loads it. Adding a kind is adding a module
here; a task takes it by naming it in an :class:`~worker.tasks.base.InputSlot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from worker.errors import InvalidInput
from worker.inputs import audio, image, video
from worker.inputs.base import InputKind, PreparedInput

if TYPE_CHECKING:
    from worker.job_time import JobTime
    from worker.request.model import MediaInput
    from worker.settings import Limits

KINDS: dict[str, InputKind] = {kind.name: kind for kind in (image.KIND, audio.KIND, video.KIND)}


def prepare_inputs(given: Sequence[MediaInput], limits: Limits, time: JobTime) -> Mapping[str, PreparedInput]:
    """Each of the job's media files, checked and decoded by its kind within the job's time, by request field."""
    prepared = {}
    for media in given:
        time.check(f"preparing {media.source_field}")
        prepared[media.field] = KINDS[media.kind].prepare(media, limits, time)
    return prepared


def with_video_sound(prepared: Mapping[str, PreparedInput], keep: bool) -> Mapping[str, PreparedInput]:
    """``keep_audio``: the video's own sound (``video``'s, else the first video's: animate's pose video)
    becomes the job's sound track (``audio``)."""
    if not keep:
        return prepared
    video = prepared.get("video") or next(given for given in prepared.values() if given.kind == "video")
    if video.companion is None:
        raise InvalidInput("keep_audio: the video has no sound track it could keep (allowed: true for a video with sound, else false)")
    return {**prepared, "audio": replace(video.companion, field="audio")}
