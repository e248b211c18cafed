"""What an output provider is: it takes a job's files and returns the answer's fields for them.

A provider module builds one :class:`ProviderSpec` (its settings, read from the environment at boot;
why it cannot deliver with them; how to make the provider) and :mod:`worker.delivery` registers it
by name. A job's ``output_mode`` (and ``OUTPUT_MODE``) names a provider, or ``auto``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from comfy_bootstrap.config import EnvReader


@dataclass(frozen=True)
class Artifact:
    """One file for the answer: ``name`` is its field (``video``, ``last_frame``); a ``listed`` one is
    one item of a list field (``images``). Its MIME type travels with it (a video with sound, a PNG, a WAV)."""

    name: str
    filename: str
    data: bytes = field(repr=False)
    content_type: str
    listed: bool = False

    @property
    def url_field(self) -> str:
        """Its field as a link: ``video_url``, ``last_frame_url``; ``image_urls`` for listed images."""
        return f"{self.name.removesuffix('s')}_urls" if self.listed else f"{self.name}_url"


def put(fields: dict[str, Any], artifact: Artifact, key: str, value: Any) -> None:
    """Set ``key`` to ``value``, or append it when the artifact is one of a list."""
    if artifact.listed:
        fields.setdefault(key, []).append(value)
    else:
        fields[key] = value


class Provider(Protocol):
    #: The ``output_mode`` that names it.
    mode: str
    #: The ``timings`` entry of an upload that follows the reading (None: no upload).
    upload_lap: str | None

    def deliver(self, job_id: str, artifacts: Sequence[Artifact]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ProviderSpec:
    """One output provider, as the registry knows it."""

    name: str
    read_settings: Callable[[EnvReader], Any]
    #: Why it cannot deliver with these settings, for a job that asks for it (None: it can).
    unavailable: Callable[[Any], str | None]
    #: The provider for these settings, and the advice for an answer too large to send inline.
    create: Callable[[Any, str], Provider]
    #: A setting that looks like a mistake, for the boot log (None: nothing to say).
    boot_warning: Callable[[Any], str | None] = lambda settings: None
    #: What the operator sets so that it can deliver, for the boot error of ``OUTPUT_MODE=<name>``.
    setup: str = ""
    #: ``auto`` picks the available provider of the highest rank.
    auto_rank: int = 0
    #: Advice for a file too large for the answer: when this provider is available, and when it is not.
    large_file_advice: tuple[str, str] | None = None
