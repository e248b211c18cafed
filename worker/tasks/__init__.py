"""The jobs this worker can run, one module each, registered by name.

A task (:class:`worker.tasks.base.Task`) owns its stored graph, the model files it loads, the
images and options it accepts with their defaults, how it fills its graph, and its progress
stages. Adding a job is adding a module here and a graph in ``workflows/``.
"""

from __future__ import annotations

from worker.tasks import i2v
from worker.tasks.base import Task

REGISTRY: dict[str, Task] = {task.name: task for task in (i2v.TASK,)}
TASK_NAMES: tuple[str, ...] = tuple(REGISTRY)
