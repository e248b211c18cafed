"""A job's own graph cannot read, write, delete or fetch what it likes (issue 16, part 2).

Each attack below ran on ComfyUI v0.30.0 with the pinned packs before the allow-list
(custom_graphs_validation.json records the path nodes); now each is refused before anything runs,
with one bounded answer naming the node, the class and the variable an operator would change.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import requests

from comfy_bootstrap.errors import PromptRejected
from tests.harness import decode_mp4, files_in, png_b64, running_worker
from tests.recorded import load as load_recording
from worker.errors import InvalidInput
from worker.pipeline import generate_video
from worker.request.parse import parse_request
from worker.settings import Settings
from worker.tasks import custom, custom_rules
from worker.tasks.custom_rules import ALLOWED_NODES

ALLOWED = Settings(allow_custom_workflow=True)
ROOT = Path(__file__).resolve().parents[1]


def _graph() -> dict:
    """LoadImage (titled load_image) → ImageScale → RepeatImageBatch → CreateVideo → SaveVideo, as recorded."""
    graph = json.loads(json.dumps(load_recording("custom_savevideo.json")["prompt"]))
    graph["1"]["_meta"] = {"title": "load_image"}
    return graph


def _with(node: dict, node_id: str = "50") -> dict:
    return {**_graph(), node_id: node}


#: What each refused class would do in a job's graph (ComfyUI v0.30.0 with the image's packs).
ATTACKS = {
    "VHS_PruneOutputs": {"filenames": ["2", 0], "options": "Intermediate and Utility"},  # deletes the files it is given
    "VHS_LoadImagesPath": {"directory": "/etc"},  # reads a folder (ignores VHS_STRICT_PATHS, recorded)
    "VHS_LoadImagePath": {"image": "/root/.ssh/id_rsa"},
    "VHS_LoadVideoPath": {"video": "http://169.254.169.254/latest/meta-data/"},  # fetches past the URL guard
    "VHS_LoadAudio": {"audio_file": "/proc/self/environ", "seek_seconds": 0},
    "LoadImageOutput": {"image": "other_job_00001_.png [output]"},
    "CheckpointSave": {"filename_prefix": "checkpoints/x"},  # gigabytes nothing cleans up
    "ModelSave": {"filename_prefix": "x"},
    "SaveLatent": {"filename_prefix": "latents/x"},
    "SimpleMath+": {"value": "9**9**9"},  # holds ComfyUI for ever
    "PreviewImage": {"images": ["2", 0]},  # temp files under names the worker cannot know
    "SaveAudio": {"filename_prefix": "audio/x"},
}


@pytest.mark.parametrize("class_type", list(ATTACKS))
def test_a_class_outside_the_allow_list_is_refused_naming_node_class_and_variable(class_type: str) -> None:
    with pytest.raises(PromptRejected) as err:
        parse_request({"workflow": _with({"class_type": class_type, "inputs": ATTACKS[class_type]})}, ALLOWED)
    assert str(err.value) == (
        f'workflow: node 50 ("{class_type}"): classes a job\'s own graph may not use on this worker (allowed: the classes '
        "listed in docs/api.md#your-own-graph; the operator adds others with CUSTOM_WORKFLOW_NODES)"
    )
    assert err.value.code == "workflow_rejected"


def test_many_refused_nodes_are_named_five_at_a_time() -> None:
    graph = {str(n): {"class_type": "SaveLatent", "inputs": {}} for n in range(40)}
    with pytest.raises(PromptRejected, match=r'node 4 \("SaveLatent"\) and 35 more: classes') as err:
        parse_request({"workflow": graph}, ALLOWED)
    assert len(str(err.value)) < 400


def test_the_operator_widens_the_list_by_name_or_opens_it() -> None:
    graph = _with({"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "area", "scale_by": 0.5}})
    with pytest.raises(PromptRejected):
        parse_request({"workflow": graph}, ALLOWED)
    for names in ({"ImageScaleBy", "RIFE VFI"}, {"*"}):
        parse_request({"workflow": graph}, Settings(allow_custom_workflow=True, custom_workflow_nodes=frozenset(names)))
    assert Settings.from_env({"CUSTOM_WORKFLOW_NODES": " ImageScaleBy , RIFE VFI,"}).custom_workflow_nodes == {"ImageScaleBy", "RIFE VFI"}


def test_every_class_of_the_stored_graphs_is_allowed() -> None:
    stored = {node["class_type"] for path in (ROOT / "workflows").rglob("*.json") for node in json.loads(path.read_text()).values()}
    assert stored - ALLOWED_NODES == set()


def test_an_output_node_the_worker_does_not_collect_is_refused_even_when_listed(make_runtime) -> None:
    runtime = make_runtime(ALLOW_CUSTOM_WORKFLOW="true", CUSTOM_WORKFLOW_NODES="VHS_PruneOutputs")
    graph = _with({"class_type": "VHS_PruneOutputs", "inputs": {"filenames": ["2", 0], "options": "Intermediate"}})
    with pytest.raises(PromptRejected, match=r'^workflow: node 50 \("VHS_PruneOutputs"\): output nodes whose files the worker does not collect \(allowed: SaveImage, SaveVideo, VHS_VideoCombine\)$'):
        generate_video({"workflow": graph, "image": png_b64()}, "prune", runtime)
    assert requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()["prompts"] == []


def test_with_every_class_opened_a_class_comfyui_lacks_is_still_named(make_runtime) -> None:
    runtime = make_runtime(ALLOW_CUSTOM_WORKFLOW="true", CUSTOM_WORKFLOW_NODES="*")
    graph = {**_graph(), "9": {"class_type": "NoSuchNode", "inputs": {}}, "8": {"class_type": "AlsoMissing", "inputs": {}}}
    with pytest.raises(InvalidInput, match=r"^workflow: node classes this ComfyUI does not have: AlsoMissing, NoSuchNode"):
        generate_video({"workflow": graph}, "unknown", runtime)


# --- Values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ({"__value__": ["../../etc/passwd"]}, "an object is not a plain value"),
        (["1", 0, "x"], "is not a link to a node of the graph"),
        (["99", 0], "is not a link to a node of the graph"),
        (["1", True], "is not a link to a node of the graph"),
        ([["1", 0]], "is not a link to a node of the graph"),
    ],
)
def test_widget_values_are_plain_json_or_links(value: object, what: str) -> None:
    graph = _graph()
    graph["2"]["inputs"]["upscale_method"] = value
    with pytest.raises(InvalidInput, match=rf"^workflow\.2\.inputs\.upscale_method: .*{what} \(allowed: text, a number, true or false, or a link"):
        parse_request({"workflow": graph}, ALLOWED)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"class_type": "EmptyImage", "inputs": {"width": 99999, "height": 64, "batch_size": 1, "color": 0}},
         "workflow.50.inputs.width: 99999 is above what tasks allow (allowed: at most 1280 (MAX_WIDTH))"),
        ({"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4096, "color": 0}},
         "workflow.50.inputs.batch_size: 4096 is above what tasks allow (allowed: at most 1)"),
        ({"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 4096}},
         "workflow.50.inputs.amount: 4096 is above what tasks allow (allowed: at most 161 (MAX_LENGTH))"),
        ({"class_type": "BasicScheduler", "inputs": {"model": ["2", 0], "scheduler": "simple", "steps": 10000, "denoise": 1.0}},
         "workflow.50.inputs.steps: 10000 is above what tasks allow (allowed: at most 60 (MAX_STEPS))"),
        ({"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 1000.0}},
         "workflow.50.inputs.fps: 1000.0 is above what tasks allow (allowed: at most 60 (MAX_FRAME_RATE))"),
    ],
)  # fmt: skip
def test_numbers_stay_within_what_the_tasks_allow(node: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_request({"workflow": _with(node)}, ALLOWED)
    assert str(err.value) == message


def test_a_selection_named_like_a_size_keeps_comfyuis_default() -> None:
    node = {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0, "length": 4096}}
    parse_request({"workflow": _with(node)}, ALLOWED)


def test_the_node_count_is_bounded() -> None:
    graph = {str(n): {"class_type": "ImageInvert", "inputs": {"image": [str(n - 1), 0]}} for n in range(1, 12)}
    with pytest.raises(InvalidInput, match=r"^workflow: 11 nodes is too many \(allowed: at most 10 \(MAX_WORKFLOW_NODES\)\)$"):
        parse_request({"workflow": graph}, Settings(allow_custom_workflow=True, max_workflow_nodes=10))


class _CountedNode(dict):
    """A graph node that counts how often the planning reads it."""

    reads = 0

    def __getitem__(self, key: str) -> object:
        _CountedNode.reads += 1
        return super().__getitem__(key)

    def get(self, key: str, default: object = None) -> object:
        _CountedNode.reads += 1
        return super().get(key, default)


@pytest.mark.parametrize("nodes", [1_000, 13_000])
def test_progress_of_a_long_graph_reads_each_node_a_few_times_not_once_per_other_node(nodes: int) -> None:
    """An operator may raise MAX_WORKFLOW_NODES: the progress plan of a 13,000-node chain (39 s when it
    was quadratic) reads each node a bounded number of times, and still finds the stages."""
    chain = {"1": _CountedNode(class_type="KSampler", inputs={"steps": 8})}
    chain |= {str(n): _CountedNode(class_type="ImageInvert", inputs={"image": [str(n - 1), 0]}) for n in range(2, nodes)}
    chain[str(nodes)] = _CountedNode(class_type="VAEDecode", inputs={"samples": [str(nodes - 1), 0]})
    _CountedNode.reads = 0
    plan = custom.progress(chain)
    assert _CountedNode.reads <= 8 * nodes, f"{_CountedNode.reads} reads of {nodes} nodes"
    assert (list(plan.samplers), plan.decode, plan.steps, dict(plan.loading)) == (["1"], (str(nodes),), 8, {})


@pytest.mark.parametrize("meta", ["load_image", ["x"], {"title": 5}])
def test_a_meta_of_the_wrong_type_is_a_clear_error(meta: object) -> None:
    graph = _graph()
    graph["1"]["_meta"] = meta
    with pytest.raises(InvalidInput, match=r"^workflow\.1\._meta: .* is not an object with a text title"):
        parse_request({"workflow": graph}, ALLOWED)


def test_a_value_nested_600_deep_is_a_clear_error_not_a_recursion() -> None:
    deep: object = "x"
    for _ in range(600):
        deep = [deep]
    graph = _graph()
    graph["2"]["inputs"]["upscale_method"] = deep
    with pytest.raises(InvalidInput, match=r"^workflow\.2\.inputs\.upscale_method(\.0)+: nested too deeply \(allowed: at most 32 levels"):
        parse_request({"workflow": graph}, ALLOWED)
    with pytest.raises(InvalidInput, match=r"nested too deeply"):
        parse_request({"prompt": "x", "options": {"loras": deep}}, Settings())


def test_twenty_thousand_unknown_options_give_a_short_answer() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_request({"prompt": "x", "image": png_b64(), "options": {f"key{n}": 1 for n in range(20_000)}}, Settings())
    message = str(err.value)
    assert message.startswith("options.key0: unknown option") and message.endswith("; and 19990 more problems")
    assert len(message) < 5000


# --- Files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["example.png", "other_job_00001_.png [output]", "../../secrets.png"])
def test_a_loader_reads_only_the_jobs_own_upload(make_runtime, name: str) -> None:
    runtime = make_runtime(ALLOW_CUSTOM_WORKFLOW="true")
    graph = _graph()
    graph["1"]["_meta"] = {"title": "some other title"}
    graph["1"]["inputs"]["image"] = name
    with pytest.raises(PromptRejected, match=r"^workflow\.1\.inputs\.image: .* is not a file of this job \(allowed: the job's own media"):
        generate_video({"workflow": graph, "image": png_b64()}, "loader", runtime)
    assert files_in(runtime.settings.comfy.input_dir) == []


def test_every_file_a_graph_writes_lands_in_the_jobs_folder_and_goes_with_it(make_runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The video of a VHS_VideoCombine that keeps its file in temp (save_output false) is the answer;
    a SaveImage beside it; prefixes that try to leave."""
    runtime = make_runtime(ALLOW_CUSTOM_WORKFLOW="true")
    graph = _graph()
    del graph["4"], graph["5"]  # no SaveVideo: the temp video is the only one
    graph["20"] = {"class_type": "VHS_VideoCombine", "inputs": {
        "images": ["3", 0], "frame_rate": 8, "loop_count": 0, "filename_prefix": "../../escape", "format": "video/h264-mp4",
        "pix_fmt": "yuv420p", "crf": 19, "save_metadata": True, "trim_to_audio": False, "pingpong": False, "save_output": False}}
    graph["21"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "/tmp/elsewhere"}}
    seen: list[str] = []
    original = custom_rules.check_files

    def spy(prompt: dict, uploads: frozenset[str]) -> None:
        seen.extend(node["inputs"]["filename_prefix"] for node in prompt.values() if "filename_prefix" in node["inputs"])
        original(prompt, uploads)

    monkeypatch.setattr("worker.tasks.custom.check_files", spy)
    out = generate_video({"workflow": graph, "image": png_b64()}, "folders", runtime)
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert seen and all(prefix.split("/")[0] == seen[0].split("/")[0] and ".." not in prefix for prefix in seen)
    for folder in (runtime.settings.comfy.output_dir, runtime.settings.comfy.temp_dir, runtime.settings.comfy.input_dir):
        assert files_in(folder) == [], folder


def test_a_refused_graph_through_the_local_api_is_one_clear_error(tmp_path: Path) -> None:
    with running_worker(tmp_path, ALLOW_CUSTOM_WORKFLOW="true") as api:
        attack = _with({"class_type": "VHS_LoadVideoPath", "inputs": ATTACKS["VHS_LoadVideoPath"]})
        body = api.runsync({"workflow": attack, "image": png_b64()})
        assert body["status"] == "FAILED" and body["error"].startswith('workflow_rejected: workflow: node 50 ("VHS_LoadVideoPath")')
        good = api.runsync({"workflow": _graph(), "image": png_b64()})
        assert good["status"] == "COMPLETED", good.get("error")


def test_the_docs_list_the_allowed_classes_exactly() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index("| kind | classes |"):].split("\n\n")[0]
    listed = {name for row in table.splitlines()[2:] for name in re.findall(r"`([^`]+)`", row.split("|")[2])}
    assert listed == ALLOWED_NODES
