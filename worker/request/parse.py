"""``parse_request``: the job's ``input`` → one validated, frozen :class:`VideoRequest` (a task's
job) or :class:`CustomRequest` (a job with its own graph), or one :class:`InvalidInput` naming
every problem.

The job's task is read first, because it decides which media inputs and options the job may have
and their defaults.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from worker.errors import InvalidInput
from worker.request.fields import (
    INPUT_SLOTS,
    input_fields,
    parse_flag,
    parse_inputs,
    parse_loras,
    parse_negative_prompt,
    parse_output_mode,
    parse_prompt,
    parse_speed,
    parse_task,
)
from worker.request.model import CUSTOM_TASK, DEFAULT_SPEED, CustomRequest, LoraInput, MediaInput, VideoRequest
from worker.request.options import SEED_MAX, SPECS, parse_options
from worker.request.rules import MAX_NESTING, Context, Problems, check_unknown, nesting_problem, parse_option, shown
from worker.settings import Settings
from worker.sizes import short_side
from worker.tasks import custom
from worker.tasks.custom_rules import check_graph

log = logging.getLogger(__name__)

#: The top-level fields, in the order errors list them; the media fields of a new input kind or
#: task follow these.
_FIELD_ORDER = (
    "prompt", "image", "image_url", "negative_prompt", "options", "output_mode",
    "task", "end_image", "end_image_url", "return_last_frame", "loras", "workflow", "speed", "keep_audio",
)  # fmt: skip
TOP_LEVEL_FIELDS = (
    *_FIELD_ORDER,
    *(name for slot in INPUT_SLOTS.values() for name in input_fields(slot) if name not in _FIELD_ORDER),
)
#: The fields a custom graph's job may have; the rest belong to the stored graphs.
CUSTOM_FIELDS = (
    "prompt", "negative_prompt", *(name for slot in custom.INPUTS for name in (slot.field, slot.url_field)),
    "options", "output_mode", "task", "workflow",
)  # fmt: skip


def parse_request(
    job_input: object, settings: Settings, *, unavailable_modes: Mapping[str, str] | None = None
) -> VideoRequest | CustomRequest:
    """Validate ``job_input`` (the job's ``input``) for this worker's tasks and limits; raise one InvalidInput.

    ``unavailable_modes`` are output modes this worker cannot serve, each with why
    (the delivery providers that are not configured).
    """
    limits, tasks = settings.limits, settings.tasks
    if not isinstance(job_input, dict):
        raise InvalidInput(
            f"input: {shown(job_input)} is not an object "
            f"(allowed: an object with the fields {', '.join(TOP_LEVEL_FIELDS)})"
        )
    deep = nesting_problem(job_input)
    if deep is not None:
        raise InvalidInput(f"{deep}: nested too deeply (allowed: at most {MAX_NESTING} levels of objects and lists)")
    problems = Problems()
    check_unknown(job_input, "", TOP_LEVEL_FIELDS, "field", problems)
    if job_input.get("workflow") is not None or job_input.get("task") == CUSTOM_TASK:
        return _parse_custom(job_input, settings, unavailable_modes or {}, problems)
    task = parse_task(job_input, tasks, problems)
    prompt = parse_prompt(job_input.get("prompt"), limits, problems)
    negative_prompt = parse_negative_prompt(job_input.get("negative_prompt"), limits, problems)
    inputs: tuple[MediaInput, ...] = ()
    options: dict[str, Any] = {}
    loras: tuple[LoraInput, ...] = ()
    speed = DEFAULT_SPEED
    if task is not None:  # else reported: the task decides which media, options, LoRA targets and speeds a job may have
        inputs = parse_inputs(job_input, task.inputs, task.name, tasks, limits, problems)
        loras = parse_loras(job_input.get("loras"), task, limits, problems)
        speed = parse_speed(job_input.get("speed"), task, tasks, problems)
        task_defaults = task.defaults_for(speed)
        defaults = {**task_defaults, "frame_rate": task_defaults.get("frame_rate") or settings.default_frame_rate}
        media = frozenset(given.kind for given in inputs)
        options = parse_options(job_input.get("options"), Context(limits, task, defaults, media, {}), problems)
    output_mode = parse_output_mode(job_input.get("output_mode"), unavailable_modes or {}, problems)
    return_last_frame = parse_flag(job_input, "return_last_frame", problems)
    keep_audio = _parse_keep_audio(job_input, inputs, problems)
    problems.raise_if_any()
    assert task is not None  # a missing task is always one of the problems
    request = VideoRequest(
        task=task.name,
        prompt=prompt,
        negative_prompt=negative_prompt,
        inputs=tuple(replace(media, rate=options["frame_rate"], cover=_frame(options)) for media in inputs),
        output_mode=output_mode,
        return_last_frame=return_last_frame,
        keep_audio=keep_audio,
        loras=loras,
        speed=speed,
        **options,
    )
    log.debug("request: %s", request.describe())
    return request


def _parse_keep_audio(job_input: Mapping[str, Any], inputs: tuple[MediaInput, ...], problems: Problems) -> bool:
    """``keep_audio``: the video's own sound on the output, which needs a video and no other track."""
    keep = parse_flag(job_input, "keep_audio", problems)
    kinds = {given.kind for given in inputs}
    if keep and "video" not in kinds:
        problems.add("keep_audio", "true without a video", "true with video or video_url, else false")
    elif keep and "audio" in kinds:
        problems.add("keep_audio", "true together with audio", "one sound track: keep_audio or audio")
    return keep


def _frame(options: Mapping[str, Any]) -> tuple[int, int]:
    """The frame the job's video fills: its size, or for ``aspect_ratio: auto`` a square of the resolution's short side."""
    if options.get("fit_resolution"):
        side = short_side(options["fit_resolution"])
        return side, side
    return options["width"], options["height"]


def _parse_custom(
    job_input: Mapping[str, Any], settings: Settings, unavailable: Mapping[str, str], problems: Problems
) -> CustomRequest:
    """A job with its own graph: the graph's form and size here; its node classes are checked
    against ComfyUI's at run time (worker/tasks/custom.py)."""
    workflow = _parse_workflow(job_input.get("workflow"), settings, problems)
    for name in job_input:
        if name not in CUSTOM_FIELDS and job_input[name] is not None:
            problems.add(name, "not used with your own workflow", ", ".join(CUSTOM_FIELDS))
    task = job_input.get("task")
    if task not in (None, CUSTOM_TASK):
        problems.add("task", f"{shown(task)} cannot run a workflow of your own", f'"{CUSTOM_TASK}" or no task')
    limits = settings.limits
    prompt = job_input.get("prompt")
    prompt = parse_prompt(prompt, limits, problems) if prompt is not None else None
    negative = job_input.get("negative_prompt")
    negative = parse_negative_prompt(negative, limits, problems) if negative is not None else None
    given = {name: job_input.get(name) for slot in custom.INPUTS for name in (slot.field, slot.url_field)}
    inputs = parse_inputs(given, custom.INPUTS, CUSTOM_TASK, settings.tasks, limits, problems)
    options = job_input.get("options") or {}
    seed: int | None = None
    if not isinstance(options, dict):
        problems.add("options", f"{shown(options)} is not an object", "an object with seed")
    else:
        for key in options:
            if key != "seed" and options[key] is not None:
                problems.add(f"options.{key}", "not used with your own workflow", "seed")
        if options.get("seed") is not None:
            ctx = Context(limits, None, {}, frozenset(given.kind for given in inputs), {})
            seed = parse_option(SPECS["seed"], "options.seed", options["seed"], ctx, problems)
    output_mode = parse_output_mode(job_input.get("output_mode"), unavailable, problems)
    problems.raise_if_any()
    return CustomRequest(
        workflow=workflow or {},
        prompt=prompt,
        negative_prompt=negative,
        inputs=inputs,
        seed=seed if seed is not None else secrets.randbelow(SEED_MAX + 1),
        seed_randomized=seed is None,
        output_mode=output_mode,
    )


def _parse_workflow(value: object, settings: Settings, problems: Problems) -> dict[str, Any] | None:
    allowed = "an API-format ComfyUI graph: an object of nodes, each with class_type and inputs"
    if not settings.allow_custom_workflow:
        problems.add("workflow", "your own graphs are not enabled on this worker", "a task (the operator enables them with ALLOW_CUSTOM_WORKFLOW=true)")
        return None
    if not isinstance(value, dict) or not value:
        problems.add("workflow", f"{shown(value)} is not a graph" if value is not None else "missing", allowed)
        return None
    size = len(json.dumps(value))
    if size > settings.max_workflow_bytes:
        problems.add("workflow", f"{size} bytes is too large", f"at most {settings.max_workflow_bytes} bytes (MAX_WORKFLOW_BYTES)")
        return None
    bad = [str(key) for key, node in value.items()
           if not (isinstance(node, dict) and isinstance(node.get("class_type"), str) and isinstance(node.get("inputs"), dict))]  # fmt: skip
    if bad:
        problems.add("workflow", f"node {shown(bad[0])} has no class_type and inputs" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""), allowed)
        return None
    check_graph(value, settings, problems)
    return value

