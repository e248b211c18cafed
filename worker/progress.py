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
from dataclasses import dataclass, field

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
    #: The decoder and the video node (one each per segment of a video made in segments).
    decode: tuple[str, ...]
    encode: tuple[str, ...]
    #: The nodes that run before sampling (loaders, text encoders).
    loading: frozenset[str]
    steps: int
    frames: int
    interpolate: str | None = None
    #: A video made in segments: each segment's nodes → (segment k, of n); the bar is split between them.
    segments: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressUpdate:
    stage: str
    step: int
    steps: int
    percent: float
    elapsed: float
    eta: float | None = None
    #: (segment k, of n) of a video made in segments.
    segment: tuple[int, int] | None = None

    def as_dict(self) -> dict[str, object]:
        update: dict[str, object] = {
            "stage": self.stage,
            "step": self.step,
            "steps": self.steps,
            "percent": self.percent,
            "elapsed": self.elapsed,
            "eta": self.eta,
        }
        if self.segment is not None:
            update.update(segment=self.segment[0], segments=self.segment[1])
        return update


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
        others = {**dict.fromkeys(plan.decode, "decode"), **dict.fromkeys(plan.encode, "encode")}
        if plan.interpolate is not None:
            others[plan.interpolate] = "interpolate"
        self._stage_of = {node: stage for node, (stage, _) in plan.samplers.items()} | others
        self._first_step = {node: first for node, (_, first) in plan.samplers.items()}
        self._segment_of = plan.segments
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
            return self._at(msg.node, 0, None)
        if isinstance(msg, m.Progress) and msg.node in self._stage_of:
            segment = self._segment_of.get(msg.node, (1, 1))
            if self._stage_of[msg.node] == "encode" and msg.value >= msg.max and segment[0] == segment[1]:
                return None  # the result follows at once: don't race it
            return self._at(msg.node, msg.value, msg.max)
        return None

    def _loading_update(self) -> ProgressUpdate:
        return self._update("loading", len(self._loaded), len(self._loading), self._percent)

    def _at(self, node: str, value: int, of: int | None) -> ProgressUpdate:
        """Where ``node`` is at ``value`` (of ``of``): its stage, step and share of the bar (of its segment's share)."""
        stage, segment = self._stage_of[node], self._segment_of.get(node)
        k, n = segment or (1, 1)
        if node in self._first_step:
            step = min(self._first_step[node] + value, self._steps)
            within = SAMPLING_SHARE * (step / self._steps * n - (k - 1))
            return self._update(stage, step, self._steps, self._share(within, k, n), self._eta(step), segment)
        if stage == "decode":
            return self._update(stage, 0, 1, self._share(DECODE_AT, k, n), segment=segment)
        if stage == "interpolate":
            return self._update(stage, 0, 1, INTERPOLATE_AT)
        frames = of or self._frames
        within = ENCODE_FROM + (100.0 - ENCODE_FROM) * value / frames
        return self._update(stage, value, frames, self._share(within, k, n), segment=segment)

    @staticmethod
    def _share(percent: float, k: int, n: int) -> float:
        """``percent`` of segment ``k`` of ``n`` as a percent of the whole job."""
        return round(((k - 1) * 100.0 + percent) / n, 1)

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

    def _update(
        self, stage: str, step: int, steps: int, percent: float, eta: float | None = None, segment: tuple[int, int] | None = None
    ) -> ProgressUpdate:
        self._percent = max(self._percent, percent)
        return ProgressUpdate(stage, step, steps, self._percent, round(self._clock() - self._started, 1), eta, segment)
