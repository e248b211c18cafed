"""One vocabulary: the client's tasks, speeds, options, media flags and stage names are the worker's.

``scripts/client.py`` runs without the worker's code (on a laptop, with requests and tqdm), so it
keeps its own lists; these tests fail the moment the worker gains or renames one it lacks.
"""

from __future__ import annotations

from tests.harness import REPO, load_script, png_b64
from worker.inputs import KINDS
from worker.request.fields import INPUT_SLOTS, input_fields
from worker.request.model import VideoRequest
from worker.request.options import OPTION_SPECS
from worker.request.parse import parse_request
from worker.request.rules import parse_float, parse_int, parse_str
from worker.settings import Settings
from worker.tasks import REGISTRY, SPEED_NAMES, TASK_NAMES
from worker.tasks.base import DEFAULT_SPEED, Task

client = load_script("wan22_client", REPO / "scripts" / "client.py")

TYPES = {parse_int: int, parse_float: float, parse_str: str}


def test_the_client_offers_every_task_and_speed() -> None:
    assert client.TASKS == TASK_NAMES
    assert client.SPEEDS == (DEFAULT_SPEED, *SPEED_NAMES)


def test_the_client_offers_every_option_with_its_type() -> None:
    assert dict(client.OPTIONS) == {spec.name: TYPES[spec.parse] for spec in OPTION_SPECS}


def test_the_client_offers_every_media_field() -> None:
    assert {field for field, _ in client.MEDIA} == set(INPUT_SLOTS)
    parser_flags = set(vars(client.parse_args(["--url", "http://x"])))
    assert {name for slot in INPUT_SLOTS.values() for name in input_fields(slot)} <= parser_flags
    assert set(client.TIMED) == {field for field, slot in INPUT_SLOTS.items() if KINDS[slot.kind].timed}


def test_the_client_names_every_progress_stage() -> None:
    samplers = {stage for task in REGISTRY.values() for stage, _ in task.sampler_stages(_request(task)).values()}
    assert samplers | {"queued", "loading", "decode", "interpolate", "encode"} == set(client.STAGES)


def _request(task: Task) -> VideoRequest:
    job = {"prompt": "x", "task": task.name, **{slot.field: png_b64() for slot in task.inputs if slot.required}}
    return parse_request(job, Settings())
