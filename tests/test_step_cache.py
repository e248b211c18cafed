"""``options.cache``: EasyCache before each sampler, refused where it cannot skip a step, and the
skipped steps read from ComfyUI's log (recorded: ``easycache_*``)."""

from __future__ import annotations

import json
import os

import pytest

from tests.comfy_double import recordings
from tests.harness import by_role, filled_graph, png_b64
from worker import step_cache
from worker.errors import InvalidInput
from worker.request.parse import parse_request
from worker.settings import Settings
from worker.tasks import REGISTRY

SMALL = {"width": 64, "height": 64, "length": 5, "seed": 3}


def _job(task: str, **options: object) -> dict:
    media = {slot.field: png_b64() for slot in REGISTRY[task].inputs if slot.required and slot.kind == "image"}
    small = {name: value for name, value in SMALL.items() if name in REGISTRY[task].options}
    return {"prompt": "a lighthouse", "task": task, **media, "options": {**small, **options}}


def _log(run: str) -> str:
    return "\n".join(recordings.load_json("easycache_server_log.json")[run]["server_log"])


def test_the_recorded_logs_give_each_samplers_count_and_the_answer_their_sum() -> None:
    assert step_cache.skipped_steps(_log("easycache_ti2v5b")) == [(12, 20)]
    assert step_cache.skipped_steps(_log("easycache_t2v")) == [(4, 10), (5, 10)]  # each expert counts its own half
    assert step_cache.report("easy", _log("easycache_t2v")) == {"mode": "easy", "skipped_steps": 9, "steps": 20}
    assert step_cache.report("easy", _log("easycache_ti2v5b_off")) == {"mode": "easy"}  # no line: nothing to say
    coloured = "\x1b[32m[INFO]\x1b[0m EasyCache - skipped 3/14 steps (1.27x speedup).\n"
    assert step_cache.skipped_steps(coloured) == [(3, 14)]


def test_the_fragment_has_comfyuis_defaults_as_recorded() -> None:
    (node,) = json.loads((recordings.RECORDINGS_DIR.parent.parent / "workflows" / "fragments" / "easycache.json").read_text()).values()
    recorded = recordings.load_json("object_info_more_media_nodes.json")["EasyCache"]["input"]["required"]
    defaults = {name: recorded[name][1]["default"] for name in ("reuse_threshold", "start_percent", "end_percent", "verbose")}
    assert node["class_type"] == "EasyCache" and node["inputs"] == defaults == {
        "reuse_threshold": 0.2, "start_percent": 0.15, "end_percent": 0.95, "verbose": False}  # fmt: skip


@pytest.mark.parametrize(("task", "samplers"), [("ti2v-5b", ("sampler",)), ("t2v", ("sampler_high_noise", "sampler_low_noise"))])
def test_one_easycache_goes_just_before_each_sampler(task: str, samplers: tuple[str, ...]) -> None:
    graph = filled_graph(_job(task, steps=20, cache="easy"))
    nodes = by_role(graph)
    for role, sampler in zip(REGISTRY[task].final_models, samplers, strict=True):
        assert nodes[f"cache_{role}"]["model"] == graph.link(role)
        assert nodes[sampler]["model"] == graph.link(f"cache_{role}")
    assert "cache_shift" not in by_role(filled_graph(_job(task, steps=20, cache=None)))


def test_with_torch_compile_the_cache_comes_first_then_the_compiled_model() -> None:
    env = {**os.environ, "TORCH_COMPILE": "true"}
    graph = filled_graph(_job("ti2v-5b", steps=20, cache="easy"), Settings.from_env(env))
    nodes = by_role(graph)
    assert nodes["cache_shift"]["model"] == graph.link("shift")
    assert nodes["compile_shift"]["model"] == graph.link("cache_shift") and nodes["sampler"]["model"] == graph.link("compile_shift")


@pytest.mark.parametrize(
    ("task", "options", "speed"),
    [("ti2v-5b", {}, None), ("s2v", {}, None), ("i2v", {"steps": 10}, None), ("t2v", {"steps": 30, "lora_strength": 0.0, "cfg": 3.5}, None)],
)
def test_a_run_of_ten_steps_or_more_may_cache(task: str, options: dict, speed: str | None) -> None:
    job = {**_job(task, cache="easy", **options), **({"speed": speed} if speed else {})}
    if task == "s2v":
        job = {**job, "audio": "UklGRg=="}
    assert parse_request(job, Settings()).cache == "easy"


@pytest.mark.parametrize(
    ("task", "options", "speed", "steps"),
    [("i2v", {}, None, 6), ("t2v", {}, "4step", 4), ("animate", {}, None, 6), ("ti2v-5b", {"steps": 9}, None, 9), ("s2v", {}, "4step", 4)],
)
def test_a_distilled_run_is_refused_with_the_rule(task: str, options: dict, speed: str | None, steps: int) -> None:
    job = {**_job(task, cache="easy", **options), **({"speed": speed} if speed else {})}
    job |= {"audio": "UklGRg=="} if task == "s2v" else {}
    job |= {"pose_video": "AAAA"} if task == "animate" else {}
    with pytest.raises(InvalidInput) as caught:
        parse_request(job, Settings())
    assert str(caught.value) == (
        f'options.cache: "easy" cannot help a run of {steps} steps: each sampler samples its first steps in full (allowed: with '
        "options.steps of 10 or more (ti2v-5b's and s2v's default 20, not the step-distilled 6 or 4), or no cache)"
    )


def test_an_unknown_cache_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r'^options\.cache: "teacache" is not one of the allowed values \(allowed: easy\)$'):
        parse_request(_job("ti2v-5b", cache="teacache"), Settings())
