"""The whole job's time: ``JOB_TIMEOUT`` from the handler's first line, and its cancel flag.

Every stage checks it (parsing, fetching and decoding media, uploads, ComfyUI's run, collecting,
delivering), so neither a slow download nor a cancel waits for ComfyUI to notice; a fetch ends
with it (:class:`worker.fetch_clock.FetchClock`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from comfy_bootstrap.errors import ExecutionInterrupted, ExecutionTimeout
from worker.errors import InvalidInput
from worker.fetch_clock import FetchClock


@dataclass(frozen=True)
class JobTime:
    """The job's deadline (``time.monotonic()``; None: none), its stop flag, and ``JOB_TIMEOUT`` for messages."""

    deadline: float | None = None
    stop: threading.Event | None = None
    limit: float | None = None

    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def check(self, stage: str) -> None:
        """Raise ``cancelled`` or ``timeout`` when the job must end, saying what it was doing."""
        if self.stop is not None and self.stop.is_set():
            raise ExecutionInterrupted(f"the job was cancelled while {stage}")
        if self.remaining() <= 0:
            raise ExecutionTimeout(
                f"the job ran past its time budget of {self.limit or 0:g} s (JOB_TIMEOUT) while {stage}; "
                "raise JOB_TIMEOUT and the endpoint's execution timeout, or ask for less"
            )

    def wait(self, done: threading.Event, where: str) -> None:
        """Wait for ``done``, but no longer than the job may (raises its timeout or cancel)."""
        clock = FetchClock(None, deadline_error=InvalidInput, deadline_setting="", job_deadline=self.deadline, stop=self.stop)
        while not done.wait(0.05):
            clock.check(where)
