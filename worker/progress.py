"""Turn ComfyUI's websocket messages into RunPod progress updates for the whole job.

Every update is ``{stage, step, steps, percent, elapsed, eta}`` (``elapsed``: seconds since the job
started; ``eta``: seconds left by the sampling rate so far, or None when unknown). Stages, in order:

- ``queued``: ComfyUI runs another prompt first (another job, or the warm-up); ``step`` is how
  many prompts are ahead;
- ``loading``: the loaders and text encoders run (model files read from the volume, prompts
  encoded), ``step`` of ``steps`` nodes done; on a cold worker this is the long silent part.
  ComfyUI loads the low-noise expert only when its sampler needs it, so ``loading`` comes again
  between the two experts (the bar holds its percent);
- one stage per sampler as the task names them (``high_noise`` and ``low_noise`` for the two
  A14B experts, ``sampling`` for one model), steps counted over the whole schedule;
- ``decode`` (VAEDecode; ComfyUI reports no steps for it), ``interpolate`` (RIFE makes the frames
  in between, when asked; it reports no steps either) and ``encode`` (VHS writes frames).

ComfyUI's ``progress`` messages are sparse (the recordings show 1/3 then 3/3), so the reporter
never assumes every step arrives; it reports the latest known position. Updates are throttled: a
stage change is always sent, otherwise at most one per ``interval`` seconds.
``runpod.serverless.progress_update`` starts a thread and an HTTP session per call, and an update
sent just before the result can land after it, so the last encode step is not sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from comfy_bootstrap import messages as m

#: Share of the bar each phase fills: sampling dominates a Wan job's time.
SAMPLING_SHARE = 90.0
DECODE_AT = 90.0
INTERPOLATE_AT = 92.0
ENCODE_FROM = 95.0


@dataclass(frozen=True)
class ProgressPlan:
    """Which node of a job's graph is which stage: what the reporter needs to know of the graph."""

    #: Sampler node id → (stage name, the step of the whole schedule it starts at).
    samplers: Mapping[str, tuple[str, int]]
    decode: str | None
    encode: str | None
    #: The nodes that run before sampling (loaders, text encoders).
    loading: frozenset[str]
    steps: int
    frames: int
    interpolate: str | None = None


@dataclass(frozen=True)
class ProgressUpdate:
    stage: str
    step: int
    steps: int
    percent: float
    elapsed: float
    eta: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "step": self.step,
            "steps": self.steps,
            "percent": self.percent,
            "elapsed": self.elapsed,
            "eta": self.eta,
        }


class ProgressReporter:
    """Feeds on the messages of one prompt and calls ``send`` with throttled updates."""

    def __init__(
        self,
        plan: ProgressPlan,
        *,
        send: Callable[[dict[str, object]], None],
        interval: float,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``plan``: the stages of the job's graph; ``started``: when the job began."""
        others = {plan.decode: "decode", plan.interpolate: "interpolate", plan.encode: "encode"}
        self._stage_of = {node: stage for node, (stage, _) in plan.samplers.items()} | {n: s for n, s in others.items() if n is not None}
        self._offset = {stage: first for stage, first in plan.samplers.values()}
        self._loading = plan.loading
        self._loaded: set[str] = set()
        self._steps = max(plan.steps, 1)
        self._frames = max(plan.frames, 1)
        self._send = send
        self._interval = interval
        self._clock = clock
        self._started = clock() if started is None else started
        self._running = False
        self._sampling_from: tuple[float, int] | None = None  # (time, step) of the first sampling step seen
        self._percent = 0.0
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
        if isinstance(msg, m.Status) and not self._running and msg.queue_remaining > 1:
            ahead = msg.queue_remaining - 1
            return self._update("queued", ahead, ahead, 0.0)
        if isinstance(msg, m.ExecutionStart):
            self._running = True
            return self._loading_update()
        if isinstance(msg, m.ExecutionCached):
            self._loaded.update(node for node in msg.nodes if node in self._loading)
            return None
        if isinstance(msg, m.Executing) and msg.node in self._loading:
            self._running = True
            update = self._loading_update()
            self._loaded.add(msg.node)
            return update
        if isinstance(msg, m.Executing) and msg.node in self._stage_of:
            return self._at(self._stage_of[msg.node], 0, None)
        if isinstance(msg, m.Progress) and msg.node in self._stage_of:
            stage = self._stage_of[msg.node]
            if stage == "encode" and msg.value >= msg.max:
                return None  # the result follows at once: don't race it
            return self._at(stage, msg.value, msg.max)
        return None

    def _loading_update(self) -> ProgressUpdate:
        return self._update("loading", len(self._loaded), len(self._loading), self._percent)

    def _at(self, stage: str, value: int, of: int | None) -> ProgressUpdate:
        if stage in self._offset:
            step = min(self._offset[stage] + value, self._steps)
            return self._update(stage, step, self._steps, round(SAMPLING_SHARE * step / self._steps, 1), self._eta(step))
        if stage == "decode":
            return self._update(stage, 0, 1, DECODE_AT)
        if stage == "interpolate":
            return self._update(stage, 0, 1, INTERPOLATE_AT)
        frames = of or self._frames
        return self._update(stage, value, frames, round(ENCODE_FROM + (100.0 - ENCODE_FROM) * value / frames, 1))

    def _eta(self, step: int) -> float | None:
        """Seconds left in sampling at the rate measured since the first sampling step was seen."""
        now = self._clock()
        if self._sampling_from is None:
            self._sampling_from = (now, step)
            return None
        since, first = self._sampling_from
        if step <= first:
            return None
        return round((now - since) / (step - first) * (self._steps - step), 1)

    def _update(self, stage: str, step: int, steps: int, percent: float, eta: float | None = None) -> ProgressUpdate:
        self._percent = max(self._percent, percent)
        return ProgressUpdate(stage, step, steps, self._percent, round(self._clock() - self._started, 1), eta)
