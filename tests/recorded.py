"""Helpers to read the recordings of the real ComfyUI in ``tests/recordings/``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).resolve().parent / "recordings"


def load(name: str) -> Any:
    return json.loads((RECORDINGS / name).read_text(encoding="utf-8"))


def ws_texts(name: str) -> Iterator[str]:
    """The websocket text frames of a ``*_ws.jsonl`` recording, in order, as ComfyUI sent them."""
    for line in (RECORDINGS / name).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "text":
            yield json.dumps(entry["msg"])


def history_entry(name: str) -> dict[str, Any]:
    """The single entry of a recorded ``/history/{id}`` body."""
    body = load(name)
    return next(iter(body.values()))
