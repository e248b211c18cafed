"""Turn ComfyUI's websocket messages into RunPod progress updates for the whole job.

Every update is ``{stage, step, steps, percent, elapsed, eta}`` (``elapsed``: seconds since the job
started; ``eta``: seconds left by the sampling rate so far, or None when unknown). Stages, in order:

- ``queued``: ComfyUI runs another prompt first (another job, or the warm-up); ``step`` is how
  many prompts are ahead;
- ``loading``: the loaders and text encoders run (model files read from the volume, prompts
  encoded), ``step`` of ``steps`` nodes done; on a cold worker this is the long silent part, so the
  percent moves through it (:data:`LOADING_SHARE` of the bar) by the nodes done, each weighted by
  what its class costs on a cold start (:data:`LOAD_WEIGHTS`);
- ``preprocess``: a node that draws what steers the video from the job's own video (the pose,
  by SDPose; the person's mask, by SAM 3.1: :data:`PREPROCESS_CLASSES`), ``step`` of ``steps``
  frames done; it takes :data:`PREPROCESS_SHARE` of the bar after the loading share;
- one stage per sampler as the task names them (``high_noise`` and ``low_noise`` for the two
  A14B experts, ``sampling`` for one model), steps counted over the whole schedule;
- ``decode`` (VAEDecode; ComfyUI reports no steps for it), ``interpolate`` (ComfyUI's
  ``FrameInterpolate`` makes the frames in between, when asked; ``steps`` is how many) and
  ``encode`` (VHS writes frames).

Stages only go forward, and the percent never goes back. ComfyUI loads the low-noise expert only
when its sampler needs it, between the two experts: those loaders count as loaded but report no
stage of their own (the bar stays on the stage it is in). A video made in segments goes through
sampling, decode and encode once per segment; ``segment`` says which.

ComfyUI's ``progress`` messages are sparse (the recordings show 1/3 then 3/3), so the reporter
never assumes every step arrives; it reports the latest known position. Updates are throttled: a
stage change is always sent, otherwise at most one per ``interval`` seconds.
``runpod.serverless.progress_update`` starts a thread and an HTTP session per call, and an update
sent just before the result can land after it, so the last encode step is not sent.

The reporter also notes when the loading ended and the first sampling step came (:class:`Marks`),
for the answer's ``timings``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfy_bootstrap import messages as m

#: Share of the bar each phase fills: loading up to LOADING_SHARE, preprocessing (when the graph has
#: it) the next PREPROCESS_SHARE, sampling up to DECODE_AT.
LOADING_SHARE = 10.0
PREPROCESS_SHARE = 10.0
DECODE_AT = 90.0
INTERPOLATE_AT = 92.0
ENCODE_FROM = 95.0

#: What a node of the loading stage weighs in its share of the bar, by class: roughly what it costs
#: on a cold start (a 14B expert read from the volume ≈ 14 GB; the UMT5 text encoder ≈ 7 GB, then
#: moved to the GPU by the first prompt encode; a VAE ≈ 0.3–1.4 GB; a LoRA a few hundred MB; the
#: latent nodes run the VAE's encoder on the image). Any other class weighs DEFAULT_LOAD_WEIGHT.
LOAD_WEIGHTS: Mapping[str, float] = {
    "UNETLoader": 30.0,
    "CheckpointLoaderSimple": 30.0,
    "CLIPLoader": 15.0,
    "CLIPTextEncode": 5.0,
    "CLIPVisionLoader": 4.0,
    "AudioEncoderLoader": 4.0,
    "VAELoader": 3.0,
    "WanImageToVideo": 2.0,
    "WanFirstLastFrameToVideo": 2.0,
    "Wan22ImageToVideoLatent": 2.0,
    "WanSoundImageToVideo": 2.0,
    "AudioEncoderEncode": 2.0,
    "CLIPVisionEncode": 2.0,
    "LoraLoaderModelOnly": 1.0,
    "LoraLoader": 1.0,
    "LoadImage": 0.2,
    "LoadAudio": 0.2,
    "ImageResize+": 0.2,
    "ModelSamplingSD3": 0.2,
    "EmptyHunyuanLatentVideo": 0.2,
}
DEFAULT_LOAD_WEIGHT = 1.0
#: Node classes of the ``preprocess`` stage: they report the frames they have done.
PREPROCESS_CLASSES = frozenset({"SDPoseKeypointExtractor", "SAM3_VideoTrack"})


def loading_weights(prompt: Mapping[str, Any], nodes: Iterable[str]) -> dict[str, float]:
    """Each of ``nodes`` (ids of ``prompt``, an API-format graph) with its weight by class (:data:`LOAD_WEIGHTS`)."""
    return {node: LOAD_WEIGHTS.get(str(prompt[node].get("class_type")), DEFAULT_LOAD_WEIGHT) for node in nodes}


@dataclass(frozen=True)
class ProgressPlan:
    """Which node of a job's graph is which stage: what the reporter needs to know of the graph."""

    #: Sampler node id → (stage name, the step of the whole schedule it starts at).
    samplers: Mapping[str, tuple[str, int]]
    #: The decoder and the video node (one each per segment of a video made in segments).
    decode: tuple[str, ...]
    encode: tuple[str, ...]
    #: The nodes that run before sampling (loaders, text encoders), each with its weight (:func:`loading_weights`).
    loading: Mapping[str, float]
    steps: int
    frames: int
    interpolate: str | None = None
    #: The nodes of the ``preprocess`` stage (:data:`PREPROCESS_CLASSES`), not among ``loading``.
    preprocess: tuple[str, ...] = ()
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


@dataclass
class Marks:
    """When (``time.monotonic()``) the run's loading ended — the first sampler started (without one,
    the decoder or the video node): nodes beside the loaders, such as the sound track's, may run
    before or after them — and when ComfyUI reported its first sampling step."""

    loaded_at: float | None = None
    first_step_at: float | None = None


#: A stage's place in the job: (segment, phase, the sampler's first step); stages only go forward.
_PHASES = {"queued": 0, "loading": 1, "preprocess": 2, "decode": 3, "interpolate": 4, "encode": 5}
_SAMPLING_PHASE = 2


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
        self._preprocess = frozenset(plan.preprocess)
        self._sampling_at = LOADING_SHARE + (PREPROCESS_SHARE if plan.preprocess else 0.0)
        self._first_step = {node: first for node, (_, first) in plan.samplers.items()}
        self._segment_of = plan.segments
        self._loading = plan.loading
        self._loading_weight = sum(plan.loading.values()) or 1.0
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
        self._place: tuple[int, int, int] = (0, 0, 0)
        self._last_stage: str | None = None
        self._last_sent = float("-inf")
        self.marks = Marks()

    def on_message(self, msg: m.Message) -> None:
        self._mark(msg)
        update = self._update_for(msg)
        if update is None:
            return
        now = self._clock()
        if update.stage == self._last_stage and now - self._last_sent < self._interval:
            return
        self._last_stage, self._last_sent = update.stage, now
        self._send(update.as_dict())

    def _mark(self, msg: m.Message) -> None:
        """Note when the loading ended and the first sampling step came (for ``timings``)."""
        if isinstance(msg, m.Executing) and msg.node in self._stage_of and self.marks.loaded_at is None and msg.node not in self._preprocess:
            self.marks.loaded_at = self._clock()
        if isinstance(msg, m.Progress) and msg.node in self._first_step and self.marks.first_step_at is None:
            self.marks.first_step_at = self._clock()

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
            update = self._loading_update()  # the nodes before this one are done
            self._loaded.add(msg.node)
            return update
        if isinstance(msg, m.Executing) and msg.node in self._preprocess:
            return self._update("preprocess", 0, 1, LOADING_SHARE)
        if isinstance(msg, m.Progress) and msg.node in self._preprocess:
            return self._update("preprocess", msg.value, msg.max, round(LOADING_SHARE + PREPROCESS_SHARE * msg.value / max(msg.max, 1), 1))
        if isinstance(msg, m.Executing) and msg.node in self._stage_of:
            return self._at(msg.node, 0, None)
        if isinstance(msg, m.Progress) and msg.node in self._stage_of:
            segment = self._segment_of.get(msg.node, (1, 1))
            if self._stage_of[msg.node] == "encode" and msg.value >= msg.max and segment[0] == segment[1]:
                return None  # the result follows at once: don't race it
            return self._at(msg.node, msg.value, msg.max)
        return None

    def _loading_update(self) -> ProgressUpdate | None:
        done = sum(self._loading[node] for node in self._loaded)
        percent = LOADING_SHARE * done / self._loading_weight
        return self._update("loading", len(self._loaded), len(self._loading), round(percent, 1))

    def _at(self, node: str, value: int, of: int | None) -> ProgressUpdate | None:
        """Where ``node`` is at ``value`` (of ``of``): its stage, step and share of the bar (of its segment's share)."""
        stage, segment = self._stage_of[node], self._segment_of.get(node)
        k, n = segment or (1, 1)
        if node in self._first_step:
            step = min(self._first_step[node] + value, self._steps)
            fraction = step / self._steps * n - (k - 1)
            within = self._sampling_at + (DECODE_AT - self._sampling_at) * fraction
            place = (k, _SAMPLING_PHASE, self._first_step[node])
            return self._update(stage, step, self._steps, self._share(within, k, n), self._eta(step), segment, place)
        if stage == "decode":
            return self._update(stage, 0, 1, self._share(DECODE_AT, k, n), segment=segment, place=(k, _PHASES[stage], 0))
        if stage == "interpolate":  # ComfyUI's FrameInterpolate counts the frames it makes
            steps = of or 1
            within = INTERPOLATE_AT + (ENCODE_FROM - INTERPOLATE_AT) * min(value, steps) / steps
            return self._update(stage, min(value, steps), steps, round(within, 1), place=(k, _PHASES[stage], 0))
        frames = of or self._frames
        within = ENCODE_FROM + (100.0 - ENCODE_FROM) * value / frames
        return self._update(stage, value, frames, self._share(within, k, n), segment=segment, place=(k, _PHASES[stage], 0))

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
        self,
        stage: str,
        step: int,
        steps: int,
        percent: float,
        eta: float | None = None,
        segment: tuple[int, int] | None = None,
        place: tuple[int, int, int] | None = None,
    ) -> ProgressUpdate | None:
        """The update to send, or None when it would take the bar back to an earlier stage (a loader
        that runs between the experts, a node of an earlier segment)."""
        place = place or (0, _PHASES[stage], 0)
        if place < self._place:
            return None
        self._place = place
        self._percent = max(self._percent, percent)
        return ProgressUpdate(stage, step, steps, self._percent, round(self._clock() - self._started, 1), eta, segment)
