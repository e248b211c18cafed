"""What a validated job is: frozen dataclasses with no logic beyond describing themselves.

A leaf: the tasks (``worker/tasks/``), the input kinds (``worker/inputs/``) and the pipeline import
it; it imports nothing of theirs. The parser that builds these is :mod:`worker.request.parse`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from worker.encoding import DEFAULT_FORMAT
from worker.url_guard import redact_url

#: The speed every task has: its stored graph as it is.
DEFAULT_SPEED = "default"
#: The task name of a job that brings its own graph (``workflow``).
CUSTOM_TASK = "custom"


@dataclass(frozen=True)
class MediaInput:
    """One media file of the job as given: base64 / data URI, or a URL. Decoded by its kind (:mod:`worker.inputs`)."""

    #: The request field (``image``, ``end_image``); its URL form is ``<field>_url``.
    field: str
    #: The input kind (``image``), which knows how to check and decode it.
    kind: str
    b64: str | None = field(default=None, repr=False)
    url: str | None = field(default=None, repr=False)
    #: The part of a track to use, in seconds (``<field>_start`` / ``<field>_end``; timed kinds only).
    start: float = 0.0
    end: float | None = None
    #: Frames per second a video is resampled to (the task's rate); None keeps the video's own (video only).
    rate: float | None = None
    #: The frame a video is shown in (the job's width × height; for ``aspect_ratio: auto`` the
    #: resolution's short side squared): its frames are scaled down to the smallest size that covers it.
    cover: tuple[int, int] | None = None

    @property
    def source_field(self) -> str:
        """The request field it came in: ``image`` or ``image_url`` (``end_image``…)."""
        return self.field if self.b64 is not None else f"{self.field}_url"

    def describe(self) -> str:
        return f"base64, {len(self.b64)} characters" if self.b64 is not None else f"url {redact_url(self.url or '')}"


@dataclass(frozen=True)
class LoraInput:
    """One of the job's own LoRAs: a file ComfyUI lists (``name``) or one to fetch (``url``)."""

    index: int
    name: str | None
    url: str | None = field(repr=False)
    strength: float
    target: str

    @property
    def field(self) -> str:
        """``loras[2]``: where it came in the request, for messages."""
        return f"loras[{self.index}]"

    def describe(self) -> dict[str, object]:
        """For the answer and the log: the name or the URL without its query."""
        source = {"name": self.name} if self.name is not None else {"url": redact_url(self.url or "")}
        return {**source, "strength": self.strength, "target": self.target}


@dataclass(frozen=True)
class VideoRequest:
    """A job, validated: every value is in range and of the type the task's graph needs."""

    task: str
    prompt: str
    negative_prompt: str
    inputs: tuple[MediaInput, ...]
    width: int
    height: int
    length: int
    steps: int
    cfg: float
    frame_rate: float
    seed: int
    seed_randomized: bool
    shift: float
    sampler_name: str
    scheduler: str
    #: Dual-expert tasks only (None for the others).
    split_step: int | None = None
    lora_strength: float | None = None
    #: Tasks with images only.
    resize: str | None = None
    #: An output provider's name or ``auto``; None means the worker's default (``OUTPUT_MODE``).
    output_mode: str | None = None
    return_last_frame: bool = False
    #: Put the video input's own sound on the output (tasks with a video).
    keep_audio: bool = False
    loras: tuple[LoraInput, ...] = ()
    #: Frames made per generated frame by frame interpolation (1: off), and the video's frame rate then.
    interpolate: int = 1
    #: The model that makes them (``rife``, ``film``); None when the job does not interpolate.
    interpolation_model: str | None = None
    output_frame_rate: float | None = None
    #: Step caching (``easy``: ComfyUI's EasyCache on the diffusion models); None: every step sampled.
    cache: str | None = None
    video_format: str = DEFAULT_FORMAT
    crf: int | None = None
    #: The media whose length the video's follows (``audio``, ``video``; None: ``length`` decides).
    fit: str | None = None
    #: Task control's signal from the video (``canny``, ``pose``, ``video``; task animate: ``pose`` when the
    #: worker draws the pose from ``video``); task animate's ``mode`` (``move``, ``replace``).
    control: str | None = None
    mode: str | None = None
    #: Task animate's person mask in ``replace``: ``sam3`` when the worker tracks it in ``video`` (no ``mask_video``).
    mask: str | None = None
    #: A ``resolution`` whose size follows the start image (``aspect_ratio`` auto); see ``fit_to_image``.
    fit_resolution: str | None = None
    #: ``default`` or one of the task's speed presets (its LoRAs and defaults).
    speed: str = DEFAULT_SPEED

    def input(self, name: str) -> MediaInput | None:
        return next((given for given in self.inputs if given.field == name), None)

    @property
    def video_frames(self) -> int:
        """Frames in the video: the generated ones, and the interpolated ones between each pair."""
        return (self.length - 1) * self.interpolate + 1

    @property
    def video_frame_rate(self) -> float:
        return self.output_frame_rate or self.frame_rate * self.interpolate

    def describe(self) -> dict[str, object]:
        """The request for a log line: no media data, no URL query, no prompt text."""
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_OPTIONS}
        return {
            "task": self.task,
            "speed": self.speed,
            "prompt_chars": len(self.prompt),
            "negative_prompt_chars": len(self.negative_prompt),
            **{given.field: given.describe() for given in self.inputs},
            **options,
            "seed_randomized": self.seed_randomized,
            "output_mode": self.output_mode,
            "return_last_frame": self.return_last_frame,
            "loras": [lora.describe() for lora in self.loras],
        }


#: The fields of a request that do not come from ``options``.
_NOT_OPTIONS = frozenset(
    {"task", "prompt", "negative_prompt", "inputs", "seed_randomized", "output_mode", "return_last_frame", "loras",
     "fit_resolution", "speed", "keep_audio"}
)  # fmt: skip


@dataclass(frozen=True)
class CustomRequest:
    """A job that brings its own API-format graph (``workflow``): only the values the worker injects."""

    workflow: dict[str, Any] = field(repr=False)
    prompt: str | None
    negative_prompt: str | None
    inputs: tuple[MediaInput, ...]
    seed: int
    seed_randomized: bool
    output_mode: str | None = None
    task: str = CUSTOM_TASK

    def input(self, name: str) -> MediaInput | None:
        return next((given for given in self.inputs if given.field == name), None)
