"""Step caching (``options.cache``): ComfyUI's ``EasyCache`` before a task's samplers, and the steps
it skipped, which only ComfyUI's log tells.

EasyCache (``comfy_extras/nodes_easycache.py``) lets a sampler reuse the change the model made to
its input at an earlier step instead of running the model again, while the input has moved little
since. Within 15–95 % of the schedule it samples two steps in full (one to cache, one to measure how
the output follows the input), then skips steps while the change they add up to stays under 0.2 of
the output (``workflows/fragments/easycache.json``: ComfyUI's defaults). Each sampler logs ``EasyCache
- skipped N/M steps (…x speedup).`` when it ends; nothing of it reaches the websocket or the history
(recorded: easycache_*).
"""

from __future__ import annotations

import re
from typing import Any

#: ``options.cache``'s values.
MODES: tuple[str, ...] = ("easy",)
#: Fewest steps a job with a cache may have. Each sampler samples the first two steps of the window
#: in full, so a step-distilled run skips almost nothing: of 6 steps (3 per A14B expert) at most one,
#: of 4 none; at 10 steps one sampler may skip up to 6.
MIN_STEPS = 10

_SKIPPED = re.compile(r"EasyCache - skipped (\d+)/(\d+) steps")


def skipped_steps(log: str) -> list[tuple[int, int]]:
    """(skipped, of) per sampler that ran with EasyCache, in the order of ``log`` (ComfyUI's lines of one job)."""
    return [(int(skipped), int(steps)) for skipped, steps in _SKIPPED.findall(log)]


def report(mode: str, log: str) -> dict[str, Any]:
    """The answer's ``cache``: the mode, and the steps skipped of those run, over every sampler, when
    the log says (a ComfyUI the worker attached to shows it no log)."""
    counts = skipped_steps(log)
    if not counts:
        return {"mode": mode}
    return {"mode": mode, "skipped_steps": sum(skipped for skipped, _ in counts), "steps": sum(steps for _, steps in counts)}
