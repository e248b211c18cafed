"""Why the launched ComfyUI is gone: its exit, its last log lines, and whether the kernel's
out-of-memory killer took it (the host's RAM ran out, not the GPU's)."""

from __future__ import annotations

from dataclasses import dataclass

from .child import ComfyChild
from .launch import read_oom_kills


@dataclass(frozen=True)
class Crash:
    """A paragraph for the job's error, and whether the host's memory ran out."""

    text: str
    host_oom: bool


def diagnose(child: ComfyChild, oom_kills_at_launch: int | None, wait: float = 3.0) -> Crash | None:
    """The crash of ``child``, or None while it runs.

    A dying process closes its sockets a moment before its exit is visible, so this waits up to
    ``wait`` seconds for the exit. A SIGKILL the worker did not send, with the container's OOM-kill
    count risen since the launch (``oom_kills_at_launch``), is the kernel's out-of-memory killer.
    """
    code = child.exit_code if child.exit_code is not None else child.wait_exit(wait)
    if code is None:
        return None
    kills = read_oom_kills()
    host_oom = child.killed_from_outside and kills is not None and kills > (oom_kills_at_launch or 0)
    how = child.describe_exit(code)
    if host_oom:
        how = "signal SIGKILL from the kernel's out-of-memory killer: the host's RAM ran out (not the GPU's memory)"
    return Crash(f"ComfyUI exited with {how}. {child.tail_block(15)}", host_oom)
