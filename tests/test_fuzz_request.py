"""Property-based tests of the request parser (worker/request/, worker/tasks/custom_rules.py).

Any job input at all — arbitrary JSON, or a valid request with one part replaced by arbitrary JSON,
or a job's own graph with odd classes, values and links — is either a request or one clear, bounded
refusal (``invalid_input`` or ``workflow_rejected``). No other exception, no answer longer than a
few kilobytes, however many problems the input has.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from comfy_bootstrap.errors import PromptRejected
from worker.errors import InvalidInput
from worker.request.options import OPTION_SPECS
from worker.request.parse import TOP_LEVEL_FIELDS, parse_request
from worker.settings import Settings
from worker.tasks.custom_rules import ALLOWED_NODES

SETTINGS = Settings(allow_custom_workflow=True)
#: The longest refusal any input may get (ten named problems and a count).
MAX_ANSWER = 6000


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = _png()
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["", " ", "i2v", "s2v", "custom", "-1", "1e309", "NaN", PNG[:40], "data:image/png;base64,"]),
)  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=30
)
field_names = st.one_of(st.sampled_from(TOP_LEVEL_FIELDS), st.text(max_size=12))
option_names = st.one_of(st.sampled_from([name for spec in OPTION_SPECS for name in spec.names]), st.text(max_size=12))


def _refused_or_parsed(job_input: Any) -> None:
    try:
        parse_request(job_input, SETTINGS)
        event("parsed")
    except (InvalidInput, PromptRejected) as refusal:
        event(f"refused: {refusal.code}")
        message = str(refusal)
        assert message and len(message) <= MAX_ANSWER, len(message)


@given(json_values)
def test_any_json_is_a_request_or_one_clear_refusal(value: Any) -> None:
    _refused_or_parsed(value)


@given(st.dictionaries(field_names, json_values, max_size=8))
def test_any_object_of_fields_is_a_request_or_one_clear_refusal(job_input: dict[str, Any]) -> None:
    _refused_or_parsed(job_input)


@given(
    st.sampled_from(["i2v", "flf2v", "t2v", "ti2v-5b", "s2v"]),
    st.dictionaries(option_names, json_values, max_size=6),
    st.dictionaries(field_names, json_values, max_size=3),
)
def test_a_valid_request_with_odd_options_and_fields(task: str, options: dict[str, Any], extra: dict[str, Any]) -> None:
    _refused_or_parsed({"task": task, "prompt": "a red ball", "image": PNG, "options": options, **extra})


node_ids = st.sampled_from([str(n) for n in range(1, 8)])
#: Mostly allowed classes, so most graphs reach the value checks; sometimes a refused or made-up one.
classes = st.sampled_from([*sorted(ALLOWED_NODES), "VHS_PruneOutputs", "SaveLatent", "SimpleMath+", "No Such Node"])
input_values = st.one_of(json_values, st.tuples(node_ids, st.integers(-2, 70)).map(list))
nodes = st.fixed_dictionaries(
    {"class_type": classes, "inputs": st.dictionaries(st.sampled_from(["image", "width", "length", "steps", "batch_size", "text", "x"]),
                                                      input_values, max_size=4)},  # fmt: skip
    optional={"_meta": st.one_of(json_values, st.fixed_dictionaries({"title": st.sampled_from(["load_image", "seed", "positive_prompt"])}))},
)


@given(st.dictionaries(node_ids, nodes, min_size=1, max_size=7), st.dictionaries(field_names, json_values, max_size=2))
def test_any_graph_is_a_request_or_one_clear_refusal(workflow: dict[str, Any], extra: dict[str, Any]) -> None:
    _refused_or_parsed({**extra, "workflow": workflow})
