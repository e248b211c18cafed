"""``image``: a picture (PNG, JPEG, WEBP, GIF, BMP, TIFF), checked and decoded by :mod:`worker.image`
into an 8-bit RGB PNG that ComfyUI's ``LoadImage`` reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.image import prepare_image
from worker.inputs.base import InputKind, PreparedInput

if TYPE_CHECKING:
    from worker.job_time import JobTime
    from worker.request.model import MediaInput
    from worker.settings import Limits


def prepare(given: MediaInput, limits: Limits, time: JobTime) -> PreparedInput:
    image = prepare_image(given, limits, job_deadline=time.deadline, stop=time.stop)
    return PreparedInput(given.field, KIND.name, image.png, ".png", "image/png", image.description, (image.width, image.height))


KIND = InputKind(name="image", data_uri="data:image/<type>;base64,", loader="LoadImage", prepare=prepare)
