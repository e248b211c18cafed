"""Your own graph (``workflow``, opt-in with ALLOW_CUSTOM_WORKFLOW): checked, filled by role, run,
its video or images returned, with the same limits and cleanup as a task's job.

The double replays core CreateVideo → SaveVideo and SaveImage as recorded (custom_*.json).
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.harness import decode_mp4, files_in, png_b64, running_worker
from tests.recorded import load as load_recording
from worker.errors import InvalidInput
from worker.pipeline import generate_video
from worker.request.model import CustomRequest
from worker.request.parse import parse_request
from worker.settings import Settings

ALLOWED = Settings(allow_custom_workflow=True)


def _graph(output: str = "video") -> dict:
    """LoadImage → ImageScale → RepeatImageBatch → (CreateVideo → SaveVideo | SaveImage), as recorded,
    with the image node titled load_image."""
    name = "custom_savevideo.json" if output == "video" else "custom_saveimage.json"
    graph = json.loads(json.dumps(load_recording(name)["prompt"]))
    graph["1"]["_meta"] = {"title": "load_image"}
    return graph


def test_a_workflow_needs_the_operators_consent() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_request({"workflow": _graph()}, Settings())
    assert str(err.value) == (
        "workflow: your own graphs are not enabled on this worker (allowed: a task (the operator enables them "
        "with ALLOW_CUSTOM_WORKFLOW=true))"
    )


def test_a_workflow_job_takes_only_what_can_be_injected() -> None:
    request = parse_request({"workflow": _graph(), "prompt": " a cat ", "image": png_b64(), "options": {"seed": 5}}, ALLOWED)
    assert isinstance(request, CustomRequest) and request.prompt == "a cat" and request.seed == 5
    assert request.input("image") is not None and not request.seed_randomized
    with pytest.raises(InvalidInput) as err:
        parse_request({"workflow": _graph(), "task": "i2v", "loras": [], "options": {"width": 64}, "end_image": "x"}, ALLOWED)
    message = str(err.value)
    for clause in ("loras: not used with your own workflow", "end_image: not used with your own workflow",
                   'task: "i2v" cannot run a workflow of your own', "options.width: not used with your own workflow (allowed: seed)"):  # fmt: skip
        assert clause in message


@pytest.mark.parametrize(
    ("workflow", "what"),
    [([1, 2], "an array of 2 items is not a graph"), ({}, "an object is not a graph"),
     ({"1": {"inputs": {}}}, 'node "1" has no class_type and inputs')],
)  # fmt: skip
def test_a_workflow_must_be_an_api_format_graph(workflow, what: str) -> None:
    with pytest.raises(InvalidInput, match=rf"^workflow: {what}"):
        parse_request({"workflow": workflow}, ALLOWED)


def test_a_workflow_over_the_size_cap_is_refused() -> None:
    big = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x" * 5000}}}
    with pytest.raises(InvalidInput, match=r"^workflow: \d+ bytes is too large \(allowed: at most 2000 bytes \(MAX_WORKFLOW_BYTES\)\)"):
        parse_request({"workflow": big}, Settings(allow_custom_workflow=True, max_workflow_bytes=2000))


def test_a_workflow_that_makes_a_video_returns_it_with_the_image_injected(make_runtime) -> None:
    runtime = make_runtime(ALLOW_CUSTOM_WORKFLOW="true")
    out = generate_video({"workflow": _graph(), "image": png_b64(96, 64, (10, 200, 30))}, "custom-video", runtime)
    video = decode_mp4(base64.b64decode(out["video"]))
    assert (video["width"], video["height"], video["frames"], video["rate"]) == (64, 64, 5, 8.0)
    assert video["first_mean"][1] > 150  # the injected green image, not the graph's example.png
    assert out["task"] == "custom" and out["content_type"] == "video/mp4" and out["filename"].endswith("_.mp4")
    assert "warnings" not in out
    timings = out["timings"]  # the stages of a stored task's; no sampler ran, so no first step
    assert {"boot_wait", "loading"} <= set(timings) and "first_step" not in timings
    assert timings["loading"] < timings["execution"]  # until the video node started
    assert files_in(runtime.settings.comfy.input_dir) == [] and files_in(runtime.settings.comfy.output_dir) == []


def test_a_workflow_without_a_video_returns_its_images(make_runtime) -> None:
    runtime = make_runtime(ALLOW_CUSTOM_WORKFLOW="true")
    out = generate_video({"workflow": _graph("images"), "image": png_b64(), "prompt": "unused"}, "custom-images", runtime)
    assert len(out["images"]) == 5 and out["files_count"] == 5
    with Image.open(io.BytesIO(base64.b64decode(out["images"][0]))) as first:
        assert first.size == (64, 64)
    assert out["warnings"] == ["prompt: given, but no node of the workflow is titled 'positive_prompt', so it was not used"]
    assert files_in(runtime.settings.comfy.output_dir) == []


def test_unknown_node_classes_are_listed_before_comfyui_runs(make_runtime) -> None:
    runtime = make_runtime(ALLOW_CUSTOM_WORKFLOW="true", CUSTOM_WORKFLOW_NODES="NoSuchNode,AlsoMissing")
    graph = _graph()
    graph["9"] = {"class_type": "NoSuchNode", "inputs": {}}
    graph["8"] = {"class_type": "AlsoMissing", "inputs": {}}
    with pytest.raises(InvalidInput, match=r"^workflow: node classes this ComfyUI does not have: AlsoMissing, NoSuchNode"):
        generate_video({"workflow": graph}, "unknown", runtime)
    assert requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()["prompts"] == []


def test_a_workflow_job_through_the_local_api(tmp_path: Path) -> None:
    with running_worker(tmp_path, ALLOW_CUSTOM_WORKFLOW="true") as api:
        body = api.runsync({"workflow": _graph(), "image": png_b64(), "options": {"seed": 1}})
        assert body["status"] == "COMPLETED", body.get("error")
        assert decode_mp4(base64.b64decode(body["output"]["video"]))["frames"] == 5


@pytest.mark.parametrize("name", ["custom_savevideo.json", "custom_saveimage.json"])
def test_the_double_reports_core_save_nodes_as_recorded(comfy_double, name: str) -> None:
    recorded = load_recording(name)
    requests.post(f"{comfy_double.url}/upload/image", files={"image": ("example.png", base64.b64decode(png_b64()), "image/png")},
                  data={"overwrite": "true"}, timeout=5).raise_for_status()  # fmt: skip
    prompt_id = "0d9d9623-eb4c-4aae-b638-7a6a8f9c02bc"
    answer = requests.post(f"{comfy_double.url}/prompt", json={"prompt": recorded["prompt"], "client_id": "c", "prompt_id": prompt_id}, timeout=5)
    assert answer.status_code == recorded["prompt_response"]["status"] == 200
    deadline = time.monotonic() + 20
    while not (history := requests.get(f"{comfy_double.url}/history/{prompt_id}", timeout=5).json()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [expected] = recorded["history"].values()
    assert history[prompt_id]["outputs"] == expected["outputs"]  # same keys, file names and counters
