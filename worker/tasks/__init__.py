"""The jobs this worker can run, one module each, registered by name.

A task (:class:`worker.tasks.base.Task`) owns its stored graph, the model files it loads, the
images and options it accepts with their defaults, how it fills its graph, and its progress
stages. Adding a job is adding a module here and a graph in ``workflows/``.
"""

from __future__ import annotations

from worker.tasks import animate, control, flf2v, i2v, s2v, t2v, ti2v_5b
from worker.tasks.base import Task

REGISTRY: dict[str, Task] = {task.name: task for task in (i2v.TASK, flf2v.TASK, t2v.TASK, ti2v_5b.TASK, s2v.TASK, control.TASK, animate.TASK)}
TASK_NAMES: tuple[str, ...] = tuple(REGISTRY)
#: The job ``speed`` presets some task offers (every task also runs at ``default``).
SPEED_NAMES: tuple[str, ...] = tuple(dict.fromkeys(speed for task in REGISTRY.values() for speed in task.speeds))
