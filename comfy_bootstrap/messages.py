"""Typed websocket messages of ComfyUI v0.30.0, parsed from the JSON text frames.

Shapes follow the recordings in ``tests/recordings/*_ws.jsonl``. Only the messages the worker acts
on get a class; everything else (``progress_state``, ``executed`` of other nodes, unknown future
types) becomes :class:`Other`, so a new ComfyUI message type never breaks a job. Binary frames
(previews) are not parsed at all: previews are off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Status:
    """Queue size broadcast; the first one after connecting carries our ``sid``."""

    queue_remaining: int
    sid: str | None = None


@dataclass(frozen=True)
class ExecutionStart:
    prompt_id: str


@dataclass(frozen=True)
class ExecutionCached:
    prompt_id: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Executing:
    """A node started. ``node is None`` with our prompt id means the prompt is finished.

    After a websocket reconnect mid-run ComfyUI sends one ``executing`` without ``prompt_id``
    (recorded in ``ws_reconnect_midrun.jsonl``); ``prompt_id`` is then None.
    """

    node: str | None
    prompt_id: str | None


@dataclass(frozen=True)
class Progress:
    """Step ``value`` of ``max`` for one node (samplers: their own step span; VHS: frames).

    Sparse in practice: the recordings show 1/3 then 3/3, not every step.
    """

    prompt_id: str | None
    node: str | None
    value: int
    max: int


@dataclass(frozen=True)
class Executed:
    """A node finished and reported outputs (VHS reports its file under ``gifs``)."""

    prompt_id: str | None
    node: str
    output: dict[str, Any]


@dataclass(frozen=True)
class ExecutionSuccess:
    prompt_id: str


@dataclass(frozen=True)
class ExecutionError:
    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecutionInterrupted:
    prompt_id: str
    node_id: str | None
    node_type: str | None


@dataclass(frozen=True)
class Other:
    """Any message the worker does not act on, kept for debugging."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


Message = (
    Status
    | ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | Other
)


def parse_message(text: str) -> Message:
    """Parse one websocket text frame; malformed JSON raises ValueError."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("websocket message is not a JSON object")
    data = raw.get("data")
    return parse_message_dict(str(raw.get("type", "")), data if isinstance(data, dict) else {})


def parse_message_dict(kind: str, data: dict[str, Any]) -> Message:
    """Parse a message given as type and data (history ``status.messages`` uses this form)."""
    parser = _PARSERS.get(kind)
    if parser is None:
        return Other(kind, data)
    try:
        return parser(data)
    except (KeyError, TypeError, ValueError):
        return Other(kind, data)


def _status(d: dict[str, Any]) -> Status:
    remaining = d.get("status", {}).get("exec_info", {}).get("queue_remaining", 0)
    return Status(int(remaining), d.get("sid"))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


_PARSERS = {
    "status": _status,
    "execution_start": lambda d: ExecutionStart(d["prompt_id"]),
    "execution_cached": lambda d: ExecutionCached(d["prompt_id"], tuple(str(n) for n in d.get("nodes", []))),
    "executing": lambda d: Executing(_opt_str(d.get("node")), d.get("prompt_id")),
    "progress": lambda d: Progress(d.get("prompt_id"), _opt_str(d.get("node")), int(d["value"]), int(d["max"])),
    "executed": lambda d: Executed(d.get("prompt_id"), str(d["node"]), dict(d.get("output") or {})),
    "execution_success": lambda d: ExecutionSuccess(d["prompt_id"]),
    "execution_error": lambda d: ExecutionError(
        d["prompt_id"],
        _opt_str(d.get("node_id")),
        d.get("node_type"),
        str(d.get("exception_type", "")),
        str(d.get("exception_message", "")).strip(),
        tuple(d.get("traceback") or ()),
    ),
    "execution_interrupted": lambda d: ExecutionInterrupted(d["prompt_id"], _opt_str(d.get("node_id")), d.get("node_type")),
}
