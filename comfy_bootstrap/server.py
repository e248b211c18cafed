"""ComfyUI as the worker sees it, behind one protocol: the one it launches (:mod:`.launched`) or one
it attaches to (:mod:`.attached`, ``COMFY_URL``)."""

from __future__ import annotations

from typing import Any, Protocol

from .attached import AttachedServer
from .config import ComfySettings
from .crash import Crash
from .launch import LaunchPlan
from .launched import LaunchedServer

__all__ = ["AttachedServer", "ComfyServer", "Crash", "LaunchedServer", "comfy_server"]


class ComfyServer(Protocol):
    """What the worker asks of its ComfyUI: start it, make sure it answers before a job, restart it
    after a crash or a hang, stop it; what it logged; why it died."""

    settings: ComfySettings
    #: The command line it was launched with (None when attached).
    plan: LaunchPlan | None
    restarts: int

    @property
    def url(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def exit_code(self) -> int | None: ...

    def launch(self) -> None: ...

    def start(self) -> None: ...

    def wait_ready(self) -> None: ...

    def is_alive(self) -> bool: ...

    def ensure_alive(self) -> None: ...

    def restart(self, reason: str) -> None: ...

    def stop(self) -> None: ...

    def shutdown(self) -> None: ...

    def log_tail(self, lines: int = 40) -> str: ...

    def log_position(self) -> tuple[int | None, int]: ...

    def log_since(self, position: tuple[int | None, int]) -> str: ...

    def crash_report(self, wait: float = 3.0) -> Crash | None: ...


def comfy_server(settings: ComfySettings, **options: Any) -> ComfyServer:
    """The ComfyUI of these settings: attached to ``COMFY_URL`` when set, else launched (not started yet).

    ``options`` tune the launched server's waits and probes (tests); the attached one takes
    ``poll_interval`` and ``health_timeout``.
    """
    if settings.attached:
        return AttachedServer(settings, **{k: v for k, v in options.items() if k in ("poll_interval", "health_timeout")})
    return LaunchedServer(settings, **options)
