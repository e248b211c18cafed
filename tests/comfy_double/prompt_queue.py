"""ComfyUI's ``PromptQueue``: pending prompts by number, the running one, and the history.

Every change calls ``on_update`` (which broadcasts a ``status`` message), exactly where ComfyUI calls
``queue_updated``: put, get, task_done, wipe, and delete (which, for the last pending item, wipes and
then updates again - hence the recorded duplicated ``status`` after ``POST /queue {"delete"}``).
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: ``execution.MAXIMUM_HISTORY_SIZE``.
MAXIMUM_HISTORY_SIZE = 10000


@dataclass
class QueueItem:
    """``(number, prompt_id, prompt, extra_data, outputs_to_execute)``."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    seq: int = field(default=0, compare=False)

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class PromptQueue:
    """Thread-safe queue shared by the HTTP handlers and the executor thread."""

    def __init__(self, on_update: Callable[[], None]) -> None:
        self._on_update = on_update
        self._lock = threading.RLock()
        self._not_empty = threading.Condition(self._lock)
        self._pending: list[QueueItem] = []
        self._running: dict[str, QueueItem] = {}
        self._history: dict[str, dict[str, Any]] = {}
        self._seq = itertools.count()

    # -- queue ------------------------------------------------------------------------------------

    def put(self, item: QueueItem) -> None:
        with self._lock:
            item.seq = next(self._seq)
            self._pending.append(item)
            self._pending.sort(key=lambda i: (i.number, i.seq))
            self._on_update()
            self._not_empty.notify()

    def get(self, timeout: float) -> QueueItem | None:
        with self._not_empty:
            if not self._pending:
                self._not_empty.wait(timeout)
            if not self._pending:
                return None
            item = self._pending.pop(0)
            self._running[item.prompt_id] = item
            self._on_update()
            return copy.deepcopy(item)

    def task_done(self, prompt_id: str, result: dict[str, Any], status: dict[str, Any]) -> None:
        """Move the running prompt to the history (written *before* the final ``executing``)."""
        with self._lock:
            item = self._running.pop(prompt_id)
            if len(self._history) > MAXIMUM_HISTORY_SIZE:
                self._history.pop(next(iter(self._history)))
            entry: dict[str, Any] = {
                "prompt": item.as_list(),
                "outputs": copy.deepcopy(result["outputs"]),
                "status": status,
            }
            entry.update(copy.deepcopy(result))
            self._history[prompt_id] = entry
            self._on_update()

    def remaining(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._running)

    def running_items(self) -> list[list[Any]]:
        with self._lock:
            return copy.deepcopy([i.as_list() for i in self._running.values()])

    def pending_items(self) -> list[list[Any]]:
        with self._lock:
            return copy.deepcopy([i.as_list() for i in self._pending])

    def is_running(self, prompt_id: str) -> bool:
        with self._lock:
            return prompt_id in self._running

    def delete(self, prompt_id: str) -> bool:
        """Remove a pending prompt; it then never runs and never appears in the history."""
        with self._lock:
            for index, item in enumerate(self._pending):
                if item.prompt_id == prompt_id:
                    if len(self._pending) == 1:
                        self.wipe()
                    else:
                        self._pending.pop(index)
                    self._on_update()
                    return True
        return False

    def wipe(self) -> None:
        with self._lock:
            self._pending.clear()
            self._on_update()

    # -- history ----------------------------------------------------------------------------------

    def history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """``GET /history`` (all, or ``max_items`` from ``offset``) and ``GET /history/{id}``."""
        with self._lock:
            if prompt_id is not None:
                entry = self._history.get(prompt_id)
                return {} if entry is None else {prompt_id: copy.deepcopy(entry)}
            if offset < 0 and max_items is not None:
                offset = len(self._history) - max_items
            out: dict[str, Any] = {}
            for index, (key, entry) in enumerate(self._history.items()):
                if index >= offset:
                    out[key] = copy.deepcopy(entry)
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def history_ids(self) -> list[str]:
        with self._lock:
            return list(self._history)

    def delete_history(self, prompt_id: str) -> None:
        with self._lock:
            self._history.pop(prompt_id, None)

    def wipe_history(self) -> None:
        with self._lock:
            self._history.clear()
