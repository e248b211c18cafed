"""``base64``: the files inline in the answer, refused when the answer would pass RunPod's payload limit.

RunPod drops results over 10 MB (/run) or 20 MB (/runsync) *silently*: the job then shows
COMPLETED with no output. A clear error is better than a lost video.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from comfy_bootstrap.config import EnvReader
from worker.delivery.base import Artifact, ProviderSpec, put
from worker.errors import OutputTooLarge

NAME = "base64"
#: Room for the response's fields other than the files (names, timings, JSON punctuation).
RESPONSE_OVERHEAD = 4096


@dataclass(frozen=True)
class InlineSettings:
    #: RunPod drops larger results silently; 10 MB (decimal, to be safe) fits /run and /runsync.
    max_response_bytes: int = 10_000_000


def read_settings(reader: EnvReader) -> InlineSettings:
    d = InlineSettings()
    return InlineSettings(max_response_bytes=reader.get("MAX_RESPONSE_BYTES", int, d.max_response_bytes, lo=1024))


class InlineDelivery:
    """Files as base64 in the answer, within ``MAX_RESPONSE_BYTES``."""

    mode = NAME
    upload_lap = None

    def __init__(self, limit: int, remedy: str):
        self.limit = limit
        #: What else the user can do about a file too large (another provider, or how to get one).
        self.remedy = remedy

    def deliver(self, job_id: str, artifacts: Sequence[Artifact]) -> dict[str, Any]:
        encoded_size = sum(4 * ((len(a.data) + 2) // 3) for a in artifacts)
        if encoded_size + RESPONSE_OVERHEAD > self.limit:
            raise OutputTooLarge(self._too_large(artifacts, encoded_size))
        fields: dict[str, Any] = {}
        for artifact in artifacts:
            put(fields, artifact, artifact.name, base64.b64encode(artifact.data).decode("ascii"))
        return fields

    def _too_large(self, artifacts: Sequence[Artifact], encoded_size: int) -> str:
        raw = sum(len(a.data) for a in artifacts)
        names = list(dict.fromkeys(a.name.replace("_", " ") for a in artifacts))
        what = f"the {names[0]} is" if len(artifacts) == 1 else f"the {' and '.join(names)} are"
        return (
            f"{what} {raw / 1e6:.1f} MB ({encoded_size / 1e6:.1f} MB as base64), over the "
            f"{self.limit / 1e6:.1f} MB response limit (MAX_RESPONSE_BYTES; RunPod accepts 10 MB from /run and "
            "20 MB from /runsync); ask for fewer frames (options.length) or a smaller size (options.width/height)"
            + (f", {self.remedy}" if self.remedy else "")
        )


def _create(settings: InlineSettings, remedy: str) -> InlineDelivery:
    return InlineDelivery(settings.max_response_bytes, remedy)


SPEC = ProviderSpec(name=NAME, read_settings=read_settings, unavailable=lambda settings: None, create=_create)
