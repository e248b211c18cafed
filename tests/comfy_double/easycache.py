"""``EasyCache`` (``comfy_extras/nodes_easycache.py``): the model passes through, and the sampler
that uses it writes EasyCache's log lines (``easycache_server_log.json``).

Nothing reaches the websocket or history; the log says, at INFO, ``EasyCache enabled - threshold:
0.2, start_percent: 0.15, end_percent: 0.95`` when sampling starts and ``EasyCache - skipped 12/20
steps (2.50x speedup).`` when it ends, once per sampler (each expert of a two-expert graph counts
its own steps). With ``verbose`` each step in the window says whether it is skipped, and the end
lists the change rates.

Which steps the real node skips depends on the model's outputs. The double follows the node's
rules with a change rate of its own: in the window (``start_percent <= step / steps < end_percent``)
the first two steps are sampled (one to cache, one to measure the rate), then a step is skipped
while the change accumulated since the last sampled step stays under ``reuse_threshold``, adding
:data:`CHANGE_RATE` per step. That gives the recorded 12/20 (TI2V-5B) and 4/10 (T2V's high-noise
expert); the recorded low-noise expert skipped 5/10 where the double skips 6/10.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .values import Handle, NodeContext, NodeResult

logger = logging.getLogger(__name__)

#: The double's change per step, relative to the output (the real one is measured on the model's outputs).
CHANGE_RATE = 0.045
#: Steps of the window sampled before any can be skipped: one fills the cache, the next measures the rate.
MEASURED_STEPS = 2


@dataclass(frozen=True)
class EasyCacheSettings:
    reuse_threshold: float
    start_percent: float
    end_percent: float
    verbose: bool

    def __str__(self) -> str:
        return f"easycache:{self.reuse_threshold}"


def easy_cache(
    ctx: NodeContext, model: Handle, reuse_threshold: float, start_percent: float, end_percent: float, verbose: bool = False
) -> NodeResult:
    return (model.patched(EasyCacheSettings(reuse_threshold, start_percent, end_percent, verbose)),), None


@dataclass
class StepCache:
    """One sampler's EasyCache: told each step of the schedule, it counts and logs the skipped ones."""

    settings: EasyCacheSettings
    schedule: int  # steps of the whole sigma schedule (a KSamplerAdvanced may run part of it)
    sampled_in_window: int = 0
    cumulative: float = 0.0
    skipped: int = 0
    rates: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, model: Handle, schedule: int) -> StepCache | None:
        """The model's EasyCache, its ``enabled`` line logged; None without one."""
        settings = next((p for p in model.patches if isinstance(p, EasyCacheSettings)), None)
        if settings is None:
            return None
        logger.info(
            "EasyCache enabled - threshold: %s, start_percent: %s, end_percent: %s",
            settings.reuse_threshold,
            settings.start_percent,
            settings.end_percent,
        )
        return cls(settings, schedule)

    def step(self, index: int) -> None:
        """Step ``index`` of the schedule is about to run."""
        percent = index / self.schedule
        if not self.settings.start_percent <= percent < self.settings.end_percent:
            return
        if self.sampled_in_window >= MEASURED_STEPS:
            self.cumulative += CHANGE_RATE
            decision = "skipping" if self.cumulative < self.settings.reuse_threshold else "NOT skipping"
            self._verbose(f"{decision} step; cumulative_change_rate: {self.cumulative}, reuse_threshold: {self.settings.reuse_threshold}")
            if decision == "skipping":
                self.skipped += 1
                return
            self.cumulative = 0.0
        if self.sampled_in_window:
            self.rates.append(CHANGE_RATE)
        self.sampled_in_window += 1

    def finish(self, steps: int) -> None:
        """Sampling ended (or failed): the summary line, as the node's ``finally`` writes it."""
        self._verbose(f"output_change_rates {len(self.rates)}: {self.rates}")
        approximated = self.rates[1:]
        self._verbose(f"approx_output_change_rates {len(approximated)}: {approximated}")
        speedup = steps / (steps - self.skipped) if steps != self.skipped else 1.0
        logger.info("EasyCache - skipped %d/%d steps (%.2fx speedup).", self.skipped, steps, speedup)

    def _verbose(self, message: str) -> None:
        if self.settings.verbose:
            logger.info("EasyCache [verbose] - %s", message)
