"""Fault switches: make the double misbehave the way a real ComfyUI can, on request.

A fault is a JSON object ``{"mode": ..., ...}``. Prompt faults are armed when a prompt *starts
executing*: every active fault is applied to that prompt and its ``times`` counter drops by one
(``times`` defaults to 1; ``null`` means "every prompt until reset"). Boot faults are read once from
the ``COMFY_DOUBLE_FAULTS`` environment variable (a fault object or a list of them) and from
``comfy_double_faults.json`` in the user directory (how a test arms the double the worker launches:
the worker gives its ComfyUI a scrubbed environment).

Modes and their fields (all optional except ``mode``):

- ``runtime_error``: ``node_type`` (default: a sampler, ``KSamplerAdvanced`` or ``KSampler``) or ``node_id``; ``exception_type``
  (default ``torch.OutOfMemoryError``), ``exception_message`` (default a CUDA OOM text). The node fails
  right after its ``executing`` message with the recorded ``execution_error`` shape.
- ``step_delay``: ``seconds`` per sampler step (default 0.5); progress is then sent for every step
  and every VHS frame, and ``/interrupt`` is honoured between steps.
- ``hang``: after the ``executing`` message of ``node_type`` (default: a sampler) nothing
  more is sent and ``/interrupt`` is ignored; HTTP keeps answering. Released by reset/close.
- ``freeze``: at the same point (or at once with ``"immediate": true``) the server's event loop
  blocks: no HTTP, no websocket. ``seconds`` limits it (default: until reset/close or kill).
- ``crash``: in the middle of sampling (after the first step of ``node_type``; at once with
  ``"immediate": true``) the process exits with status 1 (child) or the in-process server closes
  its listener and sockets.
- ``ws_drop``: when ``node_type`` (default ``VAEDecode``) starts, every websocket is closed; the run
  completes.
- ``missing_output``: VHS reports its ``gifs`` entry but the video file is not written.
- ``boot_exit`` (env only): log an error line and exit with ``exit_code`` (default 1) before listening.
- ``boot_delay`` (env only): wait ``seconds`` (default 5) before listening.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

PROMPT_MODES = frozenset({"runtime_error", "step_delay", "hang", "freeze", "crash", "ws_drop", "missing_output"})
BOOT_MODES = frozenset({"boot_exit", "boot_delay"})

DEFAULT_OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 1.52 GiB. GPU 0 has a total capacity of 23.55 GiB of "
    "which 1.02 GiB is free. Of the allocated memory 20.83 GiB is allocated by PyTorch, and 1.09 GiB "
    "is reserved by PyTorch but unallocated."
)

_SAMPLERS = ("KSamplerAdvanced", "KSampler")  # the I2V/T2V graphs' and the TI2V-5B graph's

_DEFAULT_NODE_TYPES: dict[str, tuple[str, ...]] = {
    "runtime_error": _SAMPLERS,
    "hang": _SAMPLERS,
    "freeze": _SAMPLERS,
    "crash": _SAMPLERS,
    "ws_drop": ("VAEDecode",),
}

_FIELDS = {
    "mode",
    "times",
    "seconds",
    "node_type",
    "node_id",
    "exception_type",
    "exception_message",
    "immediate",
    "exit_code",
}

_ids = itertools.count(1)


class FaultSpecError(ValueError):
    """A fault object that cannot be understood (answered with HTTP 400)."""


@dataclass
class Fault:
    """One armed fault. ``remaining`` is None for "until reset"."""

    mode: str
    remaining: int | None = 1
    seconds: float | None = None
    node_type: str | None = None
    node_id: str | None = None
    exception_type: str = "torch.OutOfMemoryError"
    exception_message: str = DEFAULT_OOM_MESSAGE
    immediate: bool = False
    exit_code: int = 1
    id: int = 0

    def matches(self, node_id: str, class_type: str) -> bool:
        """True when this node-level fault fires at this node."""
        if self.node_id is not None:
            return node_id == self.node_id
        if self.node_type is not None:
            return class_type == self.node_type
        return class_type in _DEFAULT_NODE_TYPES.get(self.mode, ())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["times"] = data.pop("remaining")
        return data


def parse_faults(spec: Any, *, allow_boot: bool = False) -> list[Fault]:
    """Parse a fault object, a list of them, or ``{"faults": [...]}``; raise FaultSpecError."""
    if isinstance(spec, Mapping) and "faults" in spec and "mode" not in spec:
        spec = spec["faults"]
    items = spec if isinstance(spec, list) else [spec]
    faults: list[Fault] = []
    for item in items:
        if not isinstance(item, Mapping):
            raise FaultSpecError(f"a fault must be a JSON object, got {item!r}")
        unknown = set(item) - _FIELDS
        if unknown:
            raise FaultSpecError(f"unknown fault field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
        mode = item.get("mode")
        allowed = PROMPT_MODES | BOOT_MODES if allow_boot else PROMPT_MODES
        if mode not in allowed:
            raise FaultSpecError(f"unknown fault mode {mode!r}; known: {sorted(allowed)}")
        times = item.get("times", 1)
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise FaultSpecError(f"'times' must be a positive integer or null, got {times!r}")
        seconds = item.get("seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0):
            raise FaultSpecError(f"'seconds' must be a non-negative number, got {seconds!r}")
        if mode == "step_delay" and seconds is None:
            seconds = 0.5
        if mode == "boot_delay" and seconds is None:
            seconds = 5.0
        fault = Fault(
            mode=mode,
            remaining=times,
            seconds=None if seconds is None else float(seconds),
            node_type=item.get("node_type"),
            node_id=None if item.get("node_id") is None else str(item["node_id"]),
            immediate=bool(item.get("immediate", False)),
            exit_code=int(item.get("exit_code", 1)),
            id=next(_ids),
        )
        if "exception_type" in item:
            fault.exception_type = str(item["exception_type"])
        if "exception_message" in item:
            fault.exception_message = str(item["exception_message"])
        faults.append(fault)
    return faults


def parse_env(value: str | None) -> list[Fault]:
    """Faults from ``COMFY_DOUBLE_FAULTS`` (JSON); empty/unset means none."""
    if not value or not value.strip():
        return []
    try:
        spec = json.loads(value)
    except json.JSONDecodeError as ex:
        raise FaultSpecError(f"COMFY_DOUBLE_FAULTS is not valid JSON: {ex}") from ex
    return parse_faults(spec, allow_boot=True)


@dataclass
class ArmedFaults:
    """The faults applied to one prompt (copies: later changes to the board do not affect it)."""

    faults: list[Fault]

    def first(self, mode: str) -> Fault | None:
        return next((f for f in self.faults if f.mode == mode), None)

    def at_node(self, mode: str, node_id: str, class_type: str) -> Fault | None:
        return next((f for f in self.faults if f.mode == mode and f.matches(node_id, class_type)), None)

    @property
    def step_delay(self) -> float:
        fault = self.first("step_delay")
        return (fault.seconds or 0.0) if fault else 0.0


class FaultBoard:
    """Thread-safe list of active prompt faults (set over HTTP, env or Python)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, faults: list[Fault]) -> None:
        with self._lock:
            self._faults.extend(f for f in faults if f.mode in PROMPT_MODES)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def arm_for_prompt(self) -> ArmedFaults:
        """Take every active fault for the prompt that starts now; count it down."""
        with self._lock:
            armed = [Fault(**asdict(f)) for f in self._faults]
            keep: list[Fault] = []
            for fault in self._faults:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        continue
                keep.append(fault)
            self._faults = keep
        return ArmedFaults(armed)
