"""Progress updates from the recorded message streams: every stage from the queue to the encoder,
stages only forward, a percent that rises through loading (by the nodes' weights) and sampling,
elapsed time and ETA, throttling; and when the loading ended and the first step came (timings)."""

from __future__ import annotations

import json
import re

from comfy_bootstrap import messages as m
from tests.recorded import RECORDINGS, ws_texts
from worker.progress import DEFAULT_LOAD_WEIGHT, LOAD_WEIGHTS, LOADING_SHARE, ProgressPlan, ProgressReporter, loading_weights
from worker.settings import Settings

# Node ids of the recorded I2V graph (recordings use the same graph as workflows/).
SAMPLERS = {"14": ("high_noise", 0), "15": ("low_noise", 3)}
NODES = {"decode": ("16",), "encode": ("17",)}
#: Everything the samplers depend on: loaders, text encoders, image, latent.
LOADING = {str(n) for n in range(1, 14)}
I2V = json.loads((Settings().workflows_dir / "wan22_i2v_14b_lightx2v.json").read_text())


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reporter(sent: list, clock: FakeClock, interval: float = 0.0) -> ProgressReporter:
    plan = ProgressPlan(SAMPLERS, **NODES, loading=loading_weights(I2V, LOADING), steps=6, frames=5)
    return ProgressReporter(plan, send=sent.append, interval=interval, started=0.0, clock=clock)


def _feed(reporter: ProgressReporter, name: str, clock: FakeClock, step: float) -> None:
    for text in ws_texts(name):
        clock.now += step
        reporter.on_message(m.parse_message(text))


def _replay(reporter: ProgressReporter, name: str, clock: FakeClock) -> None:
    """The recording at the times ComfyUI sent it (its ``t``, seconds since the socket opened)."""
    for line in (RECORDINGS / name).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "text":
            clock.now = entry["t"]
            reporter.on_message(m.parse_message(json.dumps(entry["msg"])))


def _stages(sent: list[dict]) -> list[str]:
    stages = [u["stage"] for u in sent]
    return [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]


def test_recorded_run_reports_each_stage_once_in_order_with_rising_percent() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    _feed(_reporter(sent, clock), "e2e_ws.jsonl", clock, 1.0)
    # The low-noise expert's loaders run between the experts: the bar does not go back to loading.
    assert _stages(sent) == ["loading", "high_noise", "low_noise", "decode", "encode"]
    percents = [u["percent"] for u in sent]
    assert percents == sorted(percents) and 0 <= percents[0] and percents[-1] < 100
    # Steps count over the whole schedule: the low-noise expert starts at the split; sampling fills 10 → 90 %.
    assert any(u["stage"] == "high_noise" and (u["step"], u["steps"], u["percent"]) == (3, 6, 50.0) for u in sent)
    assert any(u["stage"] == "low_noise" and (u["step"], u["steps"], u["percent"]) == (6, 6, 90.0) for u in sent)
    # The last encode frame is not sent: the result follows immediately.
    assert not any(u["stage"] == "encode" and u["step"] == u["steps"] for u in sent)


def test_the_percent_moves_through_a_cold_loading_by_the_weights_of_the_nodes_done() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    _replay(_reporter(sent, clock), "e2e_ws.jsonl", clock)  # a cold run: each prompt encode took ~52 s on the CPU
    loading = [u for u in sent if u["stage"] == "loading"]
    assert [u["step"] for u in loading] == sorted(u["step"] for u in loading) and loading[0]["step"] == 0
    assert all(u["steps"] == len(LOADING) for u in loading)
    percents = [u["percent"] for u in loading]
    assert percents[0] == 0 and percents == sorted(percents) and percents[-1] < LOADING_SHARE
    # When the second prompt encode starts (51.6 s in), the loaders and the first encode are done:
    # the text encoder (CLIPLoader) and the VAE weigh most of that.
    done = ["VAELoader", "LoadImage", "ImageResize+", "CLIPLoader", "CLIPTextEncode"]
    weights = loading_weights(I2V, LOADING)
    second_encode = next(u for u in loading if u["elapsed"] == 51.6)
    assert second_encode["percent"] == round(LOADING_SHARE * sum(LOAD_WEIGHTS[c] for c in done) / sum(weights.values()), 1)
    assert second_encode["step"] == 5
    elapsed = [u["elapsed"] for u in sent]
    assert elapsed == sorted(elapsed)
    assert all(u["eta"] is None for u in sent if u["stage"] in ("loading", "decode", "encode"))


def test_loaders_between_the_experts_count_as_loaded_without_a_stage_of_their_own() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = _reporter(sent, clock)
    for msg in (m.ExecutionStart("p"), m.Executing("8", "p"), m.Executing("14", "p"), m.Progress("p", "14", 3, 3),
                m.Executing("9", "p"), m.Executing("11", "p"), m.Executing("13", "p"), m.Executing("15", "p")):  # fmt: skip
        clock.now += 1
        reporter.on_message(msg)
    assert [(u["stage"], u["step"], u["percent"]) for u in sent] == [
        ("loading", 0, 0.0), ("loading", 0, 0.0), ("high_noise", 0, 10.0), ("high_noise", 3, 50.0), ("low_noise", 3, 50.0),
    ]  # fmt: skip


def test_a_stage_never_comes_back_once_a_later_one_was_reported() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = _reporter(sent, clock)
    for msg in (m.ExecutionStart("p"), m.Executing("15", "p"), m.Executing("14", "p"), m.Executing("16", "p"),
                m.Progress("p", "15", 2, 3), m.Executing("3", "p")):  # fmt: skip
        reporter.on_message(msg)
    assert [u["stage"] for u in sent] == ["loading", "low_noise", "decode"]


def test_weights_by_class_with_a_default_for_other_classes() -> None:
    prompt = {"1": {"class_type": "UNETLoader"}, "2": {"class_type": "VAELoader"}, "3": {"class_type": "SomePackNode"}}
    assert loading_weights(prompt, ["1", "2", "3"]) == {"1": 30.0, "2": 3.0, "3": DEFAULT_LOAD_WEIGHT}
    assert LOAD_WEIGHTS["UNETLoader"] > LOAD_WEIGHTS["CLIPLoader"] > LOAD_WEIGHTS["VAELoader"] > LOAD_WEIGHTS["LoadImage"]


def test_marks_when_the_loading_ended_and_the_first_step_came() -> None:
    sent: list[dict] = []
    clock = FakeClock()
    reporter = _reporter(sent, clock)
    _replay(reporter, "e2e_ws.jsonl", clock)
    assert (reporter.marks.loaded_at, reporter.marks.first_step_at) == (104.428, 104.487)  # sampler 14 starts, then its 1/3


def test_a_node_beside_the_loaders_does_not_end_the_loading() -> None:
    """The sound track's LoadAudio feeds only the video node: ComfyUI may run it first."""
    clock = FakeClock()
    reporter = _reporter([], clock)
    for now, msg in ((0.0, m.ExecutionStart("p")), (0.1, m.Executing("99", "p")), (0.2, m.Executing("3", "p")),
                     (60.0, m.Executing("14", "p")), (61.0, m.Progress("p", "14", 1, 3))):  # fmt: skip
        clock.now = now
        reporter.on_message(msg)
    assert (reporter.marks.loaded_at, reporter.marks.first_step_at) == (60.0, 61.0)


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
    assert 0 < sent[-1]["percent"] < LOADING_SHARE


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
    assert [u["stage"] for u in sent] == ["loading", "high_noise", "low_noise", "decode", "encode"]


def test_messages_of_other_nodes_report_nothing() -> None:
    sent: list[dict] = []
    reporter = _reporter(sent, FakeClock())
    reporter.on_message(m.Executing(node="99", prompt_id="p"))
    reporter.on_message(m.Progress(prompt_id="p", node="7", value=1, max=2))
    assert sent == []


def test_the_weights_table_in_the_docs_is_the_workers() -> None:
    """docs/api.md lists every class of LOAD_WEIGHTS with its weight, and the default."""
    rows = {}
    for line in (Settings().workflows_dir.parent / "docs" / "api.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].replace(".", "", 1).isdigit():
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = float(cells[1])
    assert {name: rows.get(name) for name in LOAD_WEIGHTS} == dict(LOAD_WEIGHTS)
    assert "any other class (a graph of your own) | 1 |" in (Settings().workflows_dir.parent / "docs" / "api.md").read_text()
    assert DEFAULT_LOAD_WEIGHT == 1


def test_the_pose_drawn_from_the_video_is_a_stage_of_its_own_before_sampling() -> None:
    """animate_pose_from_video: SDPose (node 31) runs in the middle of the loaders; the bar goes
    loading → preprocess (its frames, 10 → 20 %) → sampling (20 → 90 %), never back to loading, and
    the loading counts as ended when sampling starts, not when the preprocessing does."""
    graph = json.loads((RECORDINGS / "animate_pose_from_video_api.json").read_text())
    upstream = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "13", "30", "32", "33", "34"}
    plan = ProgressPlan({"14": ("sampling", 0)}, decode=("16",), encode=("17",), loading=loading_weights(graph, upstream),
                        steps=2, frames=5, preprocess=("31",))  # fmt: skip
    sent: list[dict] = []
    clock = FakeClock()
    reporter = ProgressReporter(plan, send=sent.append, interval=0.0, started=0.0, clock=clock)
    _replay(reporter, "animate_pose_from_video_ws.jsonl", clock)
    assert _stages(sent) == ["loading", "preprocess", "sampling", "decode", "encode"]
    assert [(u["step"], u["steps"], u["percent"]) for u in sent if u["stage"] == "preprocess"][-1] == (5, 5, 20.0)
    assert [u["percent"] for u in sent if u["stage"] == "sampling"][-1] == 90.0
    percents = [u["percent"] for u in sent]
    assert percents == sorted(percents)
    preprocessed = next(entry["t"] for entry in map(json.loads, (RECORDINGS / "animate_pose_from_video_ws.jsonl").read_text().splitlines())
                        if entry.get("kind") == "text" and entry["msg"]["type"] == "progress" and entry["msg"]["data"]["node"] == "31")  # fmt: skip
    assert reporter.marks.loaded_at is not None and reporter.marks.loaded_at > preprocessed
