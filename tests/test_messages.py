"""Typed websocket messages parse every frame of the real ComfyUI's recordings."""

from __future__ import annotations

import pytest

from comfy_bootstrap import messages as m
from tests.recorded import ws_texts

WS_RECORDINGS = ["e2e_ws.jsonl", "e2e_warm_ws.jsonl", "runtime_error_ws.jsonl", "interrupt_ws.jsonl", "ws_reconnect_midrun.jsonl"]


@pytest.mark.parametrize("name", WS_RECORDINGS)
def test_every_recorded_frame_parses_and_ends_with_completion(name: str) -> None:
    parsed = [m.parse_message(text) for text in ws_texts(name)]
    assert parsed, name
    last = parsed[-1]
    assert isinstance(last, m.Executing) and last.node is None and last.prompt_id
    # Only unknown-to-us types fall back to Other; the ones we act on are typed.
    assert {msg.type for msg in parsed if isinstance(msg, m.Other)} <= {"progress_state", "executed_cached"}


def test_success_run_types_in_recorded_order() -> None:
    parsed = [m.parse_message(t) for t in ws_texts("e2e_ws.jsonl")]
    kinds = [type(p).__name__ for p in parsed if not isinstance(p, (m.Other, m.Progress))]
    assert kinds[0] == "Status" and parsed[0].sid  # first status carries our sid
    assert kinds.index("ExecutionStart") < kinds.index("ExecutionCached") < kinds.index("Executed")
    assert kinds[-3:] == ["ExecutionSuccess", "Status", "Executing"]
    executed = next(p for p in parsed if isinstance(p, m.Executed))
    assert executed.output["gifs"][0]["filename"].endswith(".mp4")


def test_runtime_error_is_typed_with_node_and_exception() -> None:
    err = next(p for p in map(m.parse_message, ws_texts("runtime_error_ws.jsonl")) if isinstance(p, m.ExecutionError))
    assert (err.node_id, err.node_type, err.exception_type) == ("1", "LoadImage", "PIL.UnidentifiedImageError")
    assert err.exception_message.startswith("cannot identify image file")


def test_interrupt_is_typed() -> None:
    msg = next(p for p in map(m.parse_message, ws_texts("interrupt_ws.jsonl")) if isinstance(p, m.ExecutionInterrupted))
    assert (msg.node_id, msg.node_type) == ("14", "KSamplerAdvanced")


def test_reconnect_executing_has_no_prompt_id() -> None:
    parsed = [m.parse_message(t) for t in ws_texts("ws_reconnect_midrun.jsonl")]
    bare = [p for p in parsed if isinstance(p, m.Executing) and p.prompt_id is None]
    assert bare == [m.Executing(node="16", prompt_id=None)]


@pytest.mark.parametrize("text", ['{"type": "progress", "data": {"value": "x"}}', '{"type": "brand_new", "data": {}}', '{"data": 3}'])
def test_malformed_or_unknown_messages_become_other(text: str) -> None:
    assert isinstance(m.parse_message(text), m.Other)


def test_non_object_frame_is_an_error() -> None:
    with pytest.raises(ValueError):
        m.parse_message("[1, 2]")
