"""What an input kind is: how a job gives a media file, how the worker checks and decodes it, and
how ComfyUI receives and loads it.

A kind module builds one :class:`InputKind`; :mod:`worker.inputs` registers it by name. A task
declares the inputs it takes as :class:`worker.tasks.base.InputSlot` (field, kind, required); the
request parser, the pipeline and the docs find the kind through the slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.download import FetchRules, fetch
from worker.errors import InvalidInput
from worker.media_data import DataForm, decode_field
from worker.url_guard import redact_url

if TYPE_CHECKING:
    from worker.job_time import JobTime
    from worker.request.model import MediaInput
    from worker.settings import Limits


@dataclass(frozen=True)
class PreparedInput:
    """A job's media file, checked and decoded: the bytes ComfyUI receives and what they are."""

    field: str
    kind: str
    data: bytes = field(repr=False)
    #: The uploaded file's name ending and MIME type.
    suffix: str
    content_type: str
    #: One line for the logs: source, size, what was done to it.
    description: str
    #: Width and height of an image (None for other kinds).
    size: tuple[int, int] | None = None
    #: Length of a track or a video in seconds (None for an image).
    seconds: float | None = None
    #: Frames of a video, at the rate it was prepared for (None for other kinds).
    frames: int | None = None
    #: A second file made from the same input, for a task that wants it: a video's own sound as a WAV
    #: (kind ``audio``, over the same span). None when there is none; never uploaded unless a task asks.
    companion: PreparedInput | None = None


@dataclass(frozen=True)
class InputKind:
    """One kind of media a job can bring."""

    name: str
    #: The data URI header its base64 form may carry, for messages (``data:image/<type>;base64,``).
    data_uri: str
    #: The node class that loads the uploaded file in a graph.
    loader: str
    #: Fetch (a URL, within the job's time) or decode (base64), check against the limits, and turn it
    #: into what ComfyUI gets.
    prepare: Callable[[MediaInput, Limits, JobTime], PreparedInput]
    #: For a track in time, the most seconds of it a job may use (a job cuts it with ``<field>_start``
    #: and ``<field>_end``), and the variable that sets it; None for an image.
    max_seconds: Callable[[Limits], float] | None = None
    max_seconds_setting: str = ""

    @property
    def timed(self) -> bool:
        return self.max_seconds is not None

    @property
    def data_form(self) -> str:
        """What the base64 field takes, in a request error's ``allowed``."""
        return f"a base64 string or a {self.data_uri} URI"

    def allowed(self, field: str) -> str:
        """The rule for a slot of this kind: one of the field or its URL form."""
        return f"exactly one of {field} (base64 or a {self.data_uri} URI) or {field}_url (an http:// or https:// URL)"


def read_media(given: MediaInput, limits: Limits, time: JobTime, form: DataForm, max_bytes: int, kind: str, accept: str) -> tuple[bytes, str]:
    """The bytes of a sound or video input — its base64 form decoded, or its URL fetched by the one
    guarded fetcher within the job's time — and where they came from, for the logs."""
    field = given.source_field
    if given.b64 is not None:
        return decode_field(given.b64, field, form, max_bytes), f"{field} (base64)"
    body = bytearray()
    rules = FetchRules.for_media(limits, field, kind, max_bytes, accept, InvalidInput)
    fetch(given.url or "", rules, body.extend, job_deadline=time.deadline, stop=time.stop)
    return bytes(body), f"{field} {redact_url(given.url or '')}"
