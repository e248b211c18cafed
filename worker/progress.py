"""Turn ComfyUI's websocket messages into RunPod progress updates ``{stage, step, steps, percent}``.

Stages: one per sampler node as the task names them (``high_noise`` and ``low_noise`` for the
two A14B experts, ``sampling`` for one model; steps counted over the whole schedule), ``decode`` (VAEDecode runs; ComfyUI reports no steps for it) and ``encode`` (VHS writes frames).
ComfyUI's ``progress`` messages are sparse (the recordings show 1/3 then 3/3), so the reporter
never assumes every step arrives; it reports the latest known position.

Updates are throttled: a stage change is always sent, otherwise at most one per ``interval``
seconds. ``runpod.serverless.progress_update`` starts a thread and an HTTP session per call, and
an update sent just before the result can land after it, so the last encode step is not sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from comfy_bootstrap import messages as m

#: Share of the bar each phase fills: sampling dominates a Wan job's time.
SAMPLING_SHARE = 90.0
DECODE_AT = 90.0
ENCODE_FROM = 95.0


@dataclass(frozen=True)
class ProgressUpdate:
    stage: str
    step: int
    steps: int
    percent: float

    def as_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "step": self.step, "steps": self.steps, "percent": self.percent}


class ProgressReporter:
    """Feeds on messages of one prompt and calls ``send`` with throttled updates."""

    def __init__(
        self,
        samplers: Mapping[str, tuple[str, int]],
        *,
        decode: str,
        encode: str,
        steps: int,
        frames: int,
        send: Callable[[dict[str, object]], None],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``samplers``: sampler node id → (stage, the step it starts at); ``decode``/``encode``: node ids."""
        self._stage_of = {node: stage for node, (stage, _) in samplers.items()} | {decode: "decode", encode: "encode"}
        self._offset = {stage: first for stage, first in samplers.values()}
        self._steps = max(steps, 1)
        self._frames = max(frames, 1)
        self._send = send
        self._interval = interval
        self._clock = clock
        self._last_stage: str | None = None
        self._last_sent = float("-inf")

    def on_message(self, msg: m.Message) -> None:
        update = self._update_for(msg)
        if update is None:
            return
        now = self._clock()
        if update.stage == self._last_stage and now - self._last_sent < self._interval:
            return
        self._last_stage, self._last_sent = update.stage, now
        self._send(update.as_dict())

    def _update_for(self, msg: m.Message) -> ProgressUpdate | None:
        if isinstance(msg, m.Executing) and msg.node in self._stage_of:
            return self._at(self._stage_of[msg.node], 0, None)
        if isinstance(msg, m.Progress) and msg.node in self._stage_of:
            stage = self._stage_of[msg.node]
            if stage == "encode" and msg.value >= msg.max:
                return None  # the result follows at once: don't race it
            return self._at(stage, msg.value, msg.max)
        return None

    def _at(self, stage: str, value: int, of: int | None) -> ProgressUpdate:
        if stage in self._offset:
            step = min(self._offset[stage] + value, self._steps)
            return ProgressUpdate(stage, step, self._steps, round(SAMPLING_SHARE * step / self._steps, 1))
        if stage == "decode":
            return ProgressUpdate(stage, 0, 1, DECODE_AT)
        frames = of or self._frames
        return ProgressUpdate(stage, value, frames, round(ENCODE_FROM + (100.0 - ENCODE_FROM) * value / frames, 1))
