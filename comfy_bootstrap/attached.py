"""A ComfyUI the worker did not start (``COMFY_URL``): it can only be asked whether it answers."""

from __future__ import annotations

import contextlib
import logging
import time

from .client import HEALTH_PATH, ComfyClient
from .config import ComfySettings
from .crash import Crash
from .errors import ComfyBootError, ComfyUnavailable
from .launch import LaunchPlan

logger = logging.getLogger(__name__)


class AttachedServer:
    """Readiness and liveness of a ComfyUI at ``COMFY_URL``; nothing to launch, restart or stop."""

    plan: LaunchPlan | None = None
    restarts = 0
    pid: int | None = None
    exit_code: int | None = None

    def __init__(self, settings: ComfySettings, *, poll_interval: float = 0.25, health_timeout: float | None = None):
        self.settings = settings
        self._client = ComfyClient(settings.base_url, timeout=settings.http_timeout)
        self.poll_interval = poll_interval
        self.health_timeout = health_timeout if health_timeout is not None else min(5.0, settings.http_timeout)
        self._attached_at = time.monotonic()
        self._ready = False

    @property
    def url(self) -> str:
        return self.settings.base_url

    def launch(self) -> None:
        self._attached_at = time.monotonic()
        logger.info("attaching to the ComfyUI at %s (no process is launched)", self.url)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Poll ``GET /system_stats`` until it answers or ``COMFY_BOOT_TIMEOUT`` (from the attach) passes."""
        timeout = self.settings.boot_timeout
        deadline = self._attached_at + timeout
        while True:
            error = self._client.health_error(min(max(deadline - time.monotonic(), 0.1), 2.0))
            if error is None:
                logger.info("the attached ComfyUI at %s answers", self.url)
                self._ready = True
                return
            if time.monotonic() >= deadline:
                raise ComfyBootError(
                    f"the attached ComfyUI at {self.url} did not answer {HEALTH_PATH} within "
                    f"{timeout:g} s (COMFY_BOOT_TIMEOUT; last: {error}); check COMFY_URL"
                )
            time.sleep(min(self.poll_interval, max(deadline - time.monotonic(), 0.0)))

    def is_alive(self) -> bool:
        return self._client.health_error(self.health_timeout) is None

    def ensure_alive(self) -> None:
        """Raise :class:`ComfyUnavailable` when it does not answer: the worker cannot restart it."""
        if not self._ready:
            with contextlib.suppress(ComfyBootError):  # not answering yet: said below
                self.wait_ready()
        error = self._client.liveness_error(self.health_timeout)
        if error is not None:
            raise ComfyUnavailable(
                f"the attached ComfyUI at {self.url} does not answer ({error}); the worker did not start it and cannot restart it"
            )

    def restart(self, reason: str) -> None:
        raise ComfyUnavailable(f"the attached ComfyUI at {self.url} cannot be restarted by the worker ({reason})")

    def stop(self) -> None:
        """Nothing to stop: the worker did not start it."""

    def shutdown(self) -> None:
        """Nothing to stop: the worker did not start it."""

    def log_tail(self, lines: int = 40) -> str:
        return ""

    def log_position(self) -> tuple[int | None, int]:
        return (None, 0)

    def log_since(self, position: tuple[int | None, int]) -> str:
        return ""

    def crash_report(self, wait: float = 3.0) -> Crash | None:
        return None
