"""What the double saw, for ``GET /__double__/state``: tests assert what the worker sent.

Every record carries ``time`` (Unix seconds). Lists only grow until ``reset`` clears them.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any


class Observations:
    """Thread-safe log of requests and connections (HTTP handlers and the executor write to it)."""

    _KINDS = ("prompts", "uploads", "interrupts", "queue_requests", "ws_connections", "views", "executions")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in self._KINDS}

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append a record and return it (callers may fill in more fields later, under lock)."""
        record = {"time": time.time(), **fields}
        with self._lock:
            self._records[kind].append(record)
        return record

    def update(self, record: dict[str, Any], **fields: Any) -> None:
        with self._lock:
            record.update(fields)

    def clear(self) -> None:
        with self._lock:
            for records in self._records.values():
                records.clear()

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return copy.deepcopy(self._records)
