"""Progress updates from the recorded message streams: every stage from the queue to the encoder,
rising percent, elapsed time and ETA, throttling."""

from __future__ import annotations

from comfy_bootstrap import messages as m
from tests.recorded import ws_texts
from worker.progress import ProgressPlan, ProgressReporter

# Node ids of the recorded I2V graph (recordings use the same graph as workflows/).
SAMPLERS = {"14": ("high_noise", 0), "15": ("low_noise", 3)}
NODES = {"decode": ("16",), "encode": ("17",)}
#: Everything the samplers depend on: loaders, text encoders, image, latent.
LOADING = {str(n) for n in range(1, 14)}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reporter(sent: list, clock: FakeClock, interval: float = 0.0) -> ProgressReporter:
    plan = ProgressPlan(SAMPLERS, **NODES, loading=frozenset(LOADING), steps=6, frames=5)
    return ProgressReporter(plan, send=sent.append, interval=interval, started=0.0, clock=clock)


def _feed(reporter: ProgressReporter, name: str, clock: FakeClock, step: float) -> None:
    for text in ws_texts(name):
        clock.now += step
        reporter.on_message(m.parse_message(text))


def _stages(sent: list[dict]) -> list[str]:
    stages = [u["stage"] for u in sent]
    return [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]


def test_recorded_run_reports_each_stage_in_order_with_rising_percent() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    _feed(_reporter(sent, clock), "e2e_ws.jsonl", clock, 1.0)
    # The low-noise expert's loaders run when its sampler needs them, after the high-noise sampler.
    assert _stages(sent) == ["loading", "high_noise", "loading", "low_noise", "decode", "encode"]
    percents = [u["percent"] for u in sent]
    assert percents == sorted(percents) and 0 <= percents[0] and percents[-1] < 100
    # Steps count over the whole schedule: the low-noise expert starts at the split.
    assert any(u["stage"] == "high_noise" and (u["step"], u["steps"], u["percent"]) == (3, 6, 45.0) for u in sent)
    assert any(u["stage"] == "low_noise" and (u["step"], u["steps"], u["percent"]) == (6, 6, 90.0) for u in sent)
    # The last encode frame is not sent: the result follows immediately.
    assert not any(u["stage"] == "encode" and u["step"] == u["steps"] for u in sent)


def test_loading_counts_the_nodes_before_sampling_and_every_update_has_elapsed() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    _feed(_reporter(sent, clock), "e2e_ws.jsonl", clock, 1.0)
    loading = [u for u in sent if u["stage"] == "loading"]
    assert loading[0]["step"] == 0 and loading[0]["steps"] == len(LOADING)
    assert [u["step"] for u in loading] == sorted(u["step"] for u in loading) and loading[-1]["step"] < len(LOADING)
    between = [u for u in loading if u["percent"] > 0]  # the second expert loads at the first one's 45 %
    assert between and all(u["percent"] == 45.0 for u in between)
    elapsed = [u["elapsed"] for u in sent]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert all(u["eta"] is None for u in sent if u["stage"] in ("loading", "decode", "encode"))


def test_eta_follows_the_sampling_rate() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = _reporter(sent, clock)
    reporter.on_message(m.ExecutionStart("p"))
    for step, now in ((1, 10.0), (2, 12.0), (3, 14.0)):  # 2 s per step after the first
        clock.now = now
        reporter.on_message(m.Progress("p", "14", step, 3))
    clock.now = 16.0
    reporter.on_message(m.Progress("p", "15", 1, 3))
    etas = [u["eta"] for u in sent if u["stage"] in ("high_noise", "low_noise")]
    assert etas == [None, 8.0, 6.0, 4.0]  # 2 s per step × the steps left of 6
    assert sent[-1]["elapsed"] == 16.0


def test_cached_loaders_count_as_loaded() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = _reporter(sent, clock)
    reporter.on_message(m.ExecutionStart("p"))
    reporter.on_message(m.ExecutionCached("p", ("3", "4", "5", "6")))
    reporter.on_message(m.Executing("8", "p"))
    assert [(u["stage"], u["step"]) for u in sent] == [("loading", 0), ("loading", 4)]


def test_a_prompt_behind_another_reports_queued_with_the_prompts_ahead() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = _reporter(sent, clock)
    reporter.on_message(m.Status(queue_remaining=1, sid="s"))  # on connect: another prompt runs
    reporter.on_message(m.Status(queue_remaining=2))  # ours was queued behind it
    clock.now = 30.0
    reporter.on_message(m.ExecutionStart("p"))
    reporter.on_message(m.Status(queue_remaining=1))  # the other finished: no longer relevant
    assert [(u["stage"], u["step"], u["elapsed"]) for u in sent] == [("queued", 1, 0.0), ("loading", 0, 30.0)]


def test_throttle_keeps_stage_changes_but_drops_fast_repeats() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    _feed(_reporter(sent, clock, interval=5.0), "e2e_ws.jsonl", clock, 0.01)  # all messages within half a second
    assert [u["stage"] for u in sent] == ["loading", "high_noise", "loading", "low_noise", "decode", "encode"]


def test_messages_of_other_nodes_report_nothing() -> None:
    sent: list[dict] = []
    reporter = _reporter(sent, FakeClock())
    reporter.on_message(m.Executing(node="99", prompt_id="p"))
    reporter.on_message(m.Progress(prompt_id="p", node="7", value=1, max=2))
    assert sent == []
