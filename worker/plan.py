"""A job's plan: everything the pipeline needs to run a job, whatever kind of job it is.

A stored task (:mod:`worker.tasks.stored`) and a job with its own graph (:mod:`worker.tasks.custom`)
each turn a validated request into one :class:`JobPlan` — the graph, the files to upload, the
progress stages, how to collect the artifacts, the answer's fields — and :mod:`worker.pipeline`
runs every plan through the same skeleton.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from comfy_bootstrap.execution import RunResult
from worker.delivery import Artifact
from worker.graph import JobFiles
from worker.inputs.base import PreparedInput
from worker.lora_files import LoraJob
from worker.outputs import FileSource, OutputFile
from worker.progress import ProgressPlan

if TYPE_CHECKING:
    from worker.pipeline import Runtime, Timer


@dataclass(frozen=True)
class Upload:
    """A file ComfyUI receives in its input folder before the run."""

    field: str
    name: str
    data: bytes = field(repr=False)
    content_type: str

    @classmethod
    def of(cls, files: JobFiles, prepared: PreparedInput) -> Upload:
        """A prepared media input under its job-unique name (``wan22_<job>_<field><suffix>``)."""
        return cls(prepared.field, files.input_name(prepared.field, prepared.suffix), prepared.data, prepared.content_type)


@dataclass(frozen=True)
class Collected:
    """What a finished run gave the answer: its files, and the main file's name and type."""

    artifacts: tuple[Artifact, ...]
    filename: str
    #: How many videos (or images) the run reported.
    files_count: int
    #: The main file's MIME type when it is a video (None: images).
    content_type: str | None
    #: What else the answer says of the files (the video's ``audio``).
    facts: Mapping[str, Any] = field(default_factory=dict)


class Outputs(Protocol):
    """How to find a run's files in its history and read them."""

    def collect(self, client: FileSource, run: RunResult, produced: list[OutputFile]) -> Collected:
        """Read the run's artifacts; ``produced`` collects every file it reported, for the cleanup."""
        ...


def _no_warnings(_log: str) -> list[str]:
    return []


def _no_extras(_log: str) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class JobPlan:
    """One job, ready to run."""

    #: The API-format graph sent to ComfyUI.
    prompt: dict[str, Any] = field(repr=False)
    uploads: tuple[Upload, ...]
    progress: ProgressPlan
    outputs: Outputs
    #: The answer's fields known before the run (task, seed, size…), in the answer's order.
    fields: Mapping[str, Any]
    #: The answer's fields that follow ``timings`` (speed, interpolation, LoRAs).
    extras: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: Warnings read from the job's part of ComfyUI's log (LoRAs that did not fit).
    log_warnings: Callable[[str], list[str]] = _no_warnings
    #: Fields of ``extras`` that the job's part of ComfyUI's log completes (the steps EasyCache skipped).
    log_extras: Callable[[str], Mapping[str, Any]] = _no_extras


@dataclass(frozen=True)
class PlanContext:
    """What planning may use: the worker's runtime, the job's file names, its LoRA downloads, its timer."""

    runtime: Runtime
    files: JobFiles
    fetched: LoraJob
    timer: Timer


class Job(Protocol):
    """A validated request with its prepared media: a stored task's job or one with its own graph."""

    def describe(self) -> str:
        """One line for the log: what the job is."""
        ...

    def check(self, runtime: Runtime) -> None:
        """Before anything is uploaded: refuse what ComfyUI cannot run (missing models, unknown classes)."""
        ...

    def plan(self, ctx: PlanContext) -> JobPlan: ...
