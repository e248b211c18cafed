"""How a job's files leave the worker: one provider module each, registered by name.

- ``base64`` (:mod:`worker.delivery.inline`): inline in the answer, within RunPod's payload limit;
- ``s3`` (:mod:`worker.delivery.s3`): uploaded to an S3-compatible bucket, presigned links in the answer.

Each provider reads its own settings at boot and says why it cannot deliver with them. The runtime
holds a :class:`Delivery`: the providers by name, and the choice per job from its ``output_mode``
or ``OUTPUT_MODE`` (``auto``: the available provider ranked highest, so a video too large for the
answer still arrives when S3 is configured). Adding a provider is a module and a line here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from worker.delivery import inline, s3
from worker.delivery.base import Artifact, Provider, ProviderSpec

__all__ = ["AUTO", "Artifact", "Delivery", "OUTPUT_MODES", "PROVIDERS", "Provider"]

log = logging.getLogger(__name__)

PROVIDERS: dict[str, ProviderSpec] = {spec.name: spec for spec in (inline.SPEC, s3.SPEC)}
#: ``output_mode`` / ``OUTPUT_MODE`` picking the best available provider.
AUTO = "auto"
OUTPUT_MODES: tuple[str, ...] = (*PROVIDERS, AUTO)


class Delivery:
    """The providers this worker can deliver with, the reasons of those it cannot, and the choice per job."""

    def __init__(self, settings: Mapping[str, Any], default_mode: str):
        """``settings``: each provider's settings by name (``Settings.delivery``); ``default_mode``: ``OUTPUT_MODE``."""
        self.default_mode = default_mode
        self.unavailable: dict[str, str] = {}
        available = []
        for name, spec in PROVIDERS.items():
            warning = spec.boot_warning(settings[name])
            if warning:
                log.warning("%s", warning)
            reason = spec.unavailable(settings[name])
            if reason is None:
                available.append(spec)
            else:
                self.unavailable[name] = reason
        self.providers: dict[str, Provider] = {
            spec.name: spec.create(settings[spec.name], _advice(spec, self.unavailable)) for spec in available
        }
        log.info("output: %s by default (OUTPUT_MODE); providers %s", default_mode, ", ".join(self.providers))

    def choose(self, requested: str | None) -> Provider:
        """The job's provider: its ``output_mode``, else ``OUTPUT_MODE``; ``auto`` is the available one ranked highest.

        ``requested`` was checked against :attr:`unavailable`, and an unavailable ``OUTPUT_MODE`` stops the
        worker at boot.
        """
        mode = requested or self.default_mode
        if mode == AUTO:
            mode = max(self.providers, key=lambda name: PROVIDERS[name].auto_rank)
        return self.providers[mode]


def _advice(spec: ProviderSpec, unavailable: Mapping[str, str]) -> str:
    """What a provider tells a job whose files are too large for it: the other providers' advice."""
    advice = [
        other.large_file_advice[name in unavailable]
        for name, other in PROVIDERS.items()
        if other is not spec and other.large_file_advice is not None
    ]
    return ", ".join(advice)
