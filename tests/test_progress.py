"""Progress updates from the recorded message stream: stages, monotonic percent, throttling."""

from __future__ import annotations

from comfy_bootstrap import messages as m
from tests.recorded import ws_texts
from worker.progress import ProgressReporter

# Node ids of the recorded workflow (recordings use the same graph as workflows/).
SAMPLERS = {"14": ("high_noise", 0), "15": ("low_noise", 3)}
NODES = {"decode": "16", "encode": "17"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed(reporter: ProgressReporter, name: str, clock: FakeClock, step: float) -> None:
    for text in ws_texts(name):
        clock.now += step
        reporter.on_message(m.parse_message(text))


def test_recorded_run_reports_each_stage_in_order_with_rising_percent() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = ProgressReporter(SAMPLERS, **NODES, steps=6, frames=5, send=sent.append, interval=0.0, clock=clock)
    _feed(reporter, "e2e_ws.jsonl", clock, 1.0)
    stages = [u["stage"] for u in sent]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == ["high_noise", "low_noise", "decode", "encode"]
    percents = [u["percent"] for u in sent]
    assert percents == sorted(percents) and 0 <= percents[0] and percents[-1] < 100
    # Steps count over the whole schedule: the low-noise expert starts at the split.
    assert {"stage": "high_noise", "step": 3, "steps": 6, "percent": 45.0} in sent
    assert {"stage": "low_noise", "step": 6, "steps": 6, "percent": 90.0} in sent
    # The last encode frame is not sent: the result follows immediately.
    assert not any(u["stage"] == "encode" and u["step"] == u["steps"] for u in sent)


def test_throttle_keeps_stage_changes_but_drops_fast_repeats() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = ProgressReporter(SAMPLERS, **NODES, steps=6, frames=5, send=sent.append, interval=5.0, clock=clock)
    _feed(reporter, "e2e_ws.jsonl", clock, 0.01)  # all messages within half a second
    assert [u["stage"] for u in sent] == ["high_noise", "low_noise", "decode", "encode"]


def test_messages_of_other_nodes_report_nothing() -> None:
    sent: list[dict] = []
    reporter = ProgressReporter(SAMPLERS, **NODES, steps=6, frames=5, send=sent.append, interval=0.0)
    reporter.on_message(m.Executing(node="3", prompt_id="p"))
    reporter.on_message(m.Progress(prompt_id="p", node="7", value=1, max=2))
    assert sent == []
