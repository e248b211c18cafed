"""What a task is: a stored graph, the model files it loads, the inputs it takes, and how it fills the graph.

A task module builds one :class:`Task`; :mod:`worker.tasks` registers it under its name. The
request parser asks the task which media inputs and options it accepts and with which defaults
(and whether the inputs a job gives imply it), the pipeline asks it for its model files and its
progress stages, and the task fills its own graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from comfy_bootstrap.models import ModelFile
from worker.encoding import VideoFormat
from worker.graph import Graph, Template
from worker.request.model import DEFAULT_SPEED, VideoRequest


@dataclass(frozen=True)
class HubFile:
    """Where a model file is published on the Hugging Face Hub (``repo`` / ``path``)."""

    repo: str
    path: str


@dataclass(frozen=True)
class LoadedBy:
    """The jobs that load a model file when not every job does: those whose request ``field`` is
    ``value`` (``jobs`` names them in messages)."""

    field: str
    value: str
    jobs: str

    def includes(self, job: VideoRequest) -> bool:
        return getattr(job, self.field) == self.value


@dataclass(frozen=True)
class ModelSpec:
    """One model file a task loads: its ComfyUI folder, default name and the variable that overrides it."""

    role: str
    folder: str
    default: str
    env: str
    label: str
    source: HubFile | None = None
    #: Only some jobs load it (task animate's relight LoRA: mode ``replace``; an interpolation model:
    #: the jobs that interpolate with it); None: every job.
    loaded_by: LoadedBy | None = None

    def used_by(self, job: VideoRequest | None) -> bool:
        """Loaded by ``job`` (None: some job, as the download script and the cached-model search ask)."""
        return self.loaded_by is None or job is None or self.loaded_by.includes(job)

    def file(self, names: Mapping[str, str]) -> ModelFile:
        """The file as ComfyUI must list it, given the configured names by variable."""
        return ModelFile(self.folder, names[self.env], self.label, self.env)


if TYPE_CHECKING:  # the input kinds and the settings import the tasks' registry
    from worker.inputs.base import PreparedInput
    from worker.settings import Limits

__all__ = ["DEFAULT_SPEED", "FillInputs", "HubFile", "InputSlot", "LoadedBy", "ModelSpec", "SpeedPreset", "Task"]


@dataclass(frozen=True)
class SpeedPreset:
    """A faster way to run a task (the job's ``speed``): other model files in place of some of the
    task's (``replaces`` names their roles), and other option defaults."""

    replaces: tuple[str, ...]
    models: tuple[ModelSpec, ...]
    defaults: Mapping[str, Any]
    #: LoRAs the preset adds to the graph: the role of its model spec → the graph role it is chained after.
    loras: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSlot:
    """A media input a task takes: the request field (``<field>_url`` is its URL form), its kind
    (:mod:`worker.inputs`), and whether it is required."""

    field: str
    kind: str
    required: bool

    @property
    def url_field(self) -> str:
        return f"{self.field}_url"


@dataclass(frozen=True)
class FillInputs:
    """What a task's fill function puts into its graph for one job."""

    request: VideoRequest
    #: Model file name by the spec's role (``high_noise`` → ``wan2.2_i2v_high_noise_…``).
    models: Mapping[str, str]
    #: Uploaded file name by request field (``image`` → ``wan22_<job>_image.png``).
    inputs: Mapping[str, str]
    filename_prefix: str
    save_metadata: bool
    #: The format the video is encoded in (``options.video_format``, or H.264 when NVENC is not there).
    video_format: VideoFormat
    #: Pieces of graph a task may add (``workflows/fragments/``: a video made in segments adds one per segment).
    fragments: Mapping[str, Template] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    #: The stored graph, a file in ``workflows/``.
    workflow: str
    #: Every role the task fills, with the class its node must have.
    roles: Mapping[str, str]
    models: tuple[ModelSpec, ...]
    inputs: tuple[InputSlot, ...]
    #: Names of the options (``options.<name>``) this task accepts; see worker/request/options.py.
    options: tuple[str, ...]
    #: Option defaults; ``frame_rate`` None means the worker's ``DEFAULT_FRAME_RATE``.
    defaults: Mapping[str, Any]
    #: Width and height must be multiples of this (ComfyUI's latent node's ``step``).
    size_step: int
    fill: Callable[[Graph, FillInputs], None]
    #: Progress stages of the sampler nodes: role → (stage name, first step), for one request.
    sampler_stages: Callable[[VideoRequest], Mapping[str, tuple[str, int]]]
    #: Where a job's own LoRAs go, by their ``target``: the roles whose model they are chained after.
    lora_targets: Mapping[str, tuple[str, ...]]
    #: The roles putting out each diffusion model as its sampler takes it (``TORCH_COMPILE`` compiles it there).
    final_models: tuple[str, ...] = ()
    #: The job's ``speed`` choices besides ``default``, by name.
    speeds: Mapping[str, SpeedPreset] = field(default_factory=dict)
    #: Input fields whose presence chooses this task when a job names none (its required inputs
    #: given; the task implied by the most of them wins).
    implied_by: tuple[str, ...] = ()
    #: What the job's prepared media change in its request beyond what every task's do (the size from
    #: the image, ``fit``: :func:`worker.request.options.adapt_to_media`): s2v's length from the audio.
    adapt: Callable[[VideoRequest, Mapping[str, PreparedInput], Limits], VideoRequest] | None = None
    #: The values of the task's own choice options (``control``, ``mode``); the default is in ``defaults``.
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def specs(self, speed: str = DEFAULT_SPEED, job: VideoRequest | None = None) -> tuple[ModelSpec, ...]:
        """The model files a job of this speed loads: ``job``'s own, or (None) every file some job of
        that speed may load (its conditional ones too, :attr:`ModelSpec.loaded_by`)."""
        models = tuple(spec for spec in self.models if spec.used_by(job))
        if speed == DEFAULT_SPEED:
            return models
        preset = self.speeds[speed]
        return (*(spec for spec in models if spec.role not in preset.replaces), *preset.models)

    def job_specs(self, job: VideoRequest) -> tuple[ModelSpec, ...]:
        """The model files ``job`` loads (at its speed, with its conditional ones)."""
        return self.specs(job.speed, job)

    @property
    def all_specs(self) -> tuple[ModelSpec, ...]:
        """Every file a job of any speed may load, the default ones first."""
        return (*self.models, *(spec for preset in self.speeds.values() for spec in preset.models))

    def speed_loras(self, speed: str = DEFAULT_SPEED) -> Mapping[str, str]:
        """The LoRAs a speed adds to the graph: model spec role → the role it is chained after."""
        return {} if speed == DEFAULT_SPEED else self.speeds[speed].loras

    def defaults_for(self, speed: str = DEFAULT_SPEED) -> Mapping[str, Any]:
        return self.defaults if speed == DEFAULT_SPEED else {**self.defaults, **self.speeds[speed].defaults}

    def model_files(self, names: Mapping[str, str], speed: str = DEFAULT_SPEED, job: VideoRequest | None = None) -> list[ModelFile]:
        """The files of a job of this speed (``job``'s own when given) as ComfyUI must list them, given
        the configured names by variable."""
        return [spec.file(names) for spec in self.specs(speed, job)]

    def every_job_files(self, names: Mapping[str, str], speed: str = DEFAULT_SPEED) -> list[ModelFile]:
        """The files every job of this speed loads (none of the conditional ones), as ComfyUI must list them."""
        return [spec.file(names) for spec in self.specs(speed) if spec.loaded_by is None]

    def model_names(self, names: Mapping[str, str], job: VideoRequest) -> dict[str, str]:
        """Configured file name by model role of the files ``job`` loads, for :attr:`fill`."""
        return {spec.role: names[spec.env] for spec in self.job_specs(job)}

    def slot(self, field: str) -> InputSlot | None:
        return next((slot for slot in self.inputs if slot.field == field), None)
