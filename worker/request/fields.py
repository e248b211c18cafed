"""The top-level fields of a job: its task, prompts, media inputs, LoRAs, speed and output mode.

Each parser checks one field (or a field and its URL form), reports what is wrong to
:class:`~worker.request.rules.Problems`, and returns the value to use. Media is only checked for
type and form here; its kind decodes it (:mod:`worker.inputs`). ``prompt`` is stored without
surrounding whitespace; ``negative_prompt`` is kept as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from worker.delivery import OUTPUT_MODES
from worker.inputs import KINDS
from worker.request.model import DEFAULT_SPEED, LoraInput, MediaInput
from worker.request.options import LORA_SPECS
from worker.request.rules import (
    Context,
    OptionSpec,
    Problems,
    Range,
    check_unknown,
    const,
    number,
    parse_float,
    parse_option,
    shown,
)
from worker.settings import Limits
from worker.tasks import REGISTRY
from worker.tasks.base import InputSlot, Task
from worker.url_guard import redact_url, url_problem

#: Wan's standard negative prompt (the same text the workflow files hold).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

#: Every media input a task takes, once, by request field (the kind of a field is the same in every task).
INPUT_SLOTS: dict[str, InputSlot] = {slot.field: slot for task in REGISTRY.values() for slot in task.inputs}
#: ``<field>_start`` / ``<field>_end`` of a track: seconds (the upper bound is checked with both known).
_SPAN = OptionSpec(
    "span", parse_float, Range(const(0.0), const(float("inf")), integer=False, hi_name=lambda ctx: "its length"), lambda ctx: None
)
LORA_FIELDS = ("name", "url", "strength", "target")


# --- Task -------------------------------------------------------------------------------------------


def parse_task(job_input: Mapping[str, Any], served: tuple[str, ...], problems: Problems) -> Task | None:
    """The job's task: ``task`` as given, else the one the media given implies (``Task.implied_by``)."""
    value = job_input.get("task")
    allowed = ", ".join(served)
    if value is None:
        implied = _implied_task(job_input, served, problems)
        if implied is None:
            return None
        task, why = implied
        if task.name not in served:
            problems.add("task", f'"{task.name}" (chosen because {why}) is not served by this worker', allowed)
            return None
        return task
    if not isinstance(value, str):
        problems.add("task", f"{shown(value)} is not a string", allowed)
    elif value not in REGISTRY:
        problems.add("task", f"{shown(value)} is not a task", allowed)
    elif value not in served:
        problems.add("task", f"{shown(value)} is not served by this worker (TASKS)", allowed)
    else:
        return REGISTRY[value]
    return None


def _implied_task(job_input: Mapping[str, Any], served: tuple[str, ...], problems: Problems) -> tuple[Task, str] | None:
    """The task the given media choose, and why: among the tasks whose required inputs are given, the
    one implied by the most given fields (the first registered on a tie)."""
    given = {name for name in INPUT_SLOTS if _given(job_input, name)}
    best: tuple[int, Task] | None = None
    for task in REGISTRY.values():
        score = len(given & set(task.implied_by))
        required = all(slot.field in given for slot in task.inputs if slot.required)
        if score and required and (best is None or score > best[0]):
            best = (score, task)
    if best is None:
        default = next(task for task in REGISTRY.values() if task.implied_by)
        slot = INPUT_SLOTS[default.implied_by[0]]
        textual = " or ".join(f'"{t}"' for t in served if not any(s.required for s in REGISTRY[t].inputs))
        hint = f"; or task {textual} for a video from the prompt alone" if textual else ""
        problems.add(slot.field, f"missing (and no {slot.url_field})", KINDS[slot.kind].allowed(slot.field) + hint)
        return None
    task = best[1]
    field = next(name for name in task.implied_by if name in given)
    article = "an" if field[0] in "aeiou" else "a"
    return task, f"{article} {field} was given" if field == INPUT_SLOTS[field].kind else f"{field} was given"


def _given(job_input: Mapping[str, Any], field: str) -> bool:
    return job_input.get(field) is not None or job_input.get(f"{field}_url") is not None


def _tasks_taking(field: str, served: tuple[str, ...]) -> list[str]:
    return [task for task in served if REGISTRY[task].slot(field) is not None]


# --- Prompts ------------------------------------------------------------------------------------------


def parse_prompt(value: object, limits: Limits, problems: Problems) -> str:
    allowed = f"a non-empty string of at most {limits.max_prompt_chars} characters"
    if value is None:
        problems.add("prompt", "missing", allowed)
    elif not isinstance(value, str):
        problems.add("prompt", f"{shown(value)} is not a string", allowed)
    elif not value.strip():
        problems.add("prompt", f"{shown(value)} is empty", allowed)
    elif len(value) > limits.max_prompt_chars:
        problems.add("prompt", f"{shown(value)} is too long", allowed)
    else:
        return value.strip()
    return ""


def parse_negative_prompt(value: object, limits: Limits, problems: Problems) -> str:
    allowed = f"a string of at most {limits.max_prompt_chars} characters, may be empty"
    if value is None:
        return DEFAULT_NEGATIVE_PROMPT
    if not isinstance(value, str):
        problems.add("negative_prompt", f"{shown(value)} is not a string", allowed)
    elif len(value) > limits.max_prompt_chars:
        problems.add("negative_prompt", f"{shown(value)} is too long", allowed)
    else:
        return value
    return ""


# --- Media inputs ----------------------------------------------------------------------------------


def input_fields(slot: InputSlot) -> tuple[str, ...]:
    """The request fields of a media input: ``<field>``, ``<field>_url``, and for a track ``<field>_start`` / ``_end``."""
    trim = (f"{slot.field}_start", f"{slot.field}_end") if KINDS[slot.kind].timed else ()
    return (slot.field, slot.url_field, *trim)


def parse_inputs(
    job_input: Mapping[str, Any],
    slots: tuple[InputSlot, ...],
    owner: str,
    served: tuple[str, ...],
    limits: Limits,
    problems: Problems,
) -> tuple[MediaInput, ...]:
    """The media of ``slots``, each as exactly one of ``<field>`` / ``<field>_url`` (and the part of a
    track to use); the other media fields refused as not used by ``owner`` (the task).

    Only type and form are checked here; the kind decodes the data (:mod:`worker.inputs`). Media is
    never echoed: a string is described by its length.
    """
    taken = {slot.field: slot for slot in slots}
    inputs = []
    for name, known in INPUT_SLOTS.items():
        slot = taken.get(name)
        if slot is None:
            for given in input_fields(known):
                if job_input.get(given) is not None:
                    takers = ", ".join(_tasks_taking(name, served)) or "none on this worker"
                    problems.add(given, f"not used by task {owner}", f"only with task {takers}")
            continue
        media = _parse_input(job_input, slot, problems)
        span = _parse_span(job_input, slot, media is not None, limits, problems) if KINDS[slot.kind].timed else (0.0, None)
        if media is not None:
            inputs.append(replace(media, start=span[0], end=span[1]))
    return tuple(inputs)


def _parse_span(
    job_input: Mapping[str, Any], slot: InputSlot, given: bool, limits: Limits, problems: Problems
) -> tuple[float, float | None]:
    """``<field>_start`` / ``<field>_end``: seconds into the track, the end after the start, within the kind's limit."""
    kind = KINDS[slot.kind]
    assert kind.max_seconds is not None
    longest = kind.max_seconds(limits)
    names = (f"{slot.field}_start", f"{slot.field}_end")
    values: list[float | None] = []
    for name in names:
        raw = job_input.get(name)
        if raw is not None and not given:
            problems.add(name, f"given without {slot.field}", f"together with {slot.field} or {slot.url_field}")
        values.append(None if raw is None else parse_option(_SPAN, name, raw, Context(limits, None, {}, frozenset(), {}), problems))
    start, end = values[0] or 0.0, values[1]
    if end is not None and values[1] is not None and end <= start:
        problems.add(names[1], f"{number(end)} is not after {names[0]} ({number(start)})", f"seconds after {number(start)}")
    elif end is not None and end - start > longest:
        problems.add(
            names[1], f"{number(end)} makes {number(end - start)} s of {slot.field}, more than allowed",
            f"at most {number(longest)} s after {names[0]} ({kind.max_seconds_setting})",
        )  # fmt: skip
    return start, end


def _parse_input(job_input: Mapping[str, Any], slot: InputSlot, problems: Problems) -> MediaInput | None:
    name, url_name, kind = slot.field, slot.url_field, KINDS[slot.kind]
    data, url = job_input.get(name), job_input.get(url_name)
    if data is None and url is None:
        if slot.required:
            problems.add(name, f"missing (and no {url_name})", kind.allowed(name))
    elif data is not None and url is not None:
        problems.add(f"{name}, {url_name}", "both given", kind.allowed(name))
    elif data is not None:
        if not isinstance(data, str):
            problems.add(name, f"{shown(data)} is not a string", kind.data_form)
        elif not data.strip():
            blank = "an empty string" if not data else f"a string of {len(data)} whitespace characters"
            problems.add(name, blank, kind.data_form)
        else:
            return MediaInput(name, slot.kind, b64=data)
    else:
        checked = parse_url(url_name, url, problems)
        if checked is not None:
            return MediaInput(name, slot.kind, url=checked)
    return None


def parse_url(name: str, value: object, problems: Problems) -> str | None:
    allowed = "an http:// or https:// URL"
    if not isinstance(value, str):
        problems.add(name, f"{shown(value)} is not a string", allowed)
        return None
    url = value.strip()
    problem = url_problem(url)
    if problem is not None:
        problems.add(name, f"{shown(redact_url(url, 100, escape=False))} {problem}", allowed)
        return None
    return url


# --- Output, speed, flags ------------------------------------------------------------------------


def parse_output_mode(value: object, unavailable: Mapping[str, str], problems: Problems) -> str | None:
    """One of OUTPUT_MODES this worker serves, or None for the worker's default."""
    allowed = ", ".join(OUTPUT_MODES)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add("output_mode", f"{shown(value)} is not a string", allowed)
    elif value not in OUTPUT_MODES:
        problems.add("output_mode", f"{shown(value)} is not one of the allowed values", allowed)
    elif value in unavailable:
        others = ", ".join(mode for mode in OUTPUT_MODES if mode not in unavailable)
        problems.add("output_mode", f"{shown(value)} is not available on this worker: {unavailable[value]}", others)
    else:
        return value
    return None


def parse_speed(value: object, task: Task, served: tuple[str, ...], problems: Problems) -> str:
    """``default`` (when not given) or one of the task's speed presets."""
    if value is None:
        return DEFAULT_SPEED
    choices = (DEFAULT_SPEED, *task.speeds)
    allowed = ", ".join(f'"{name}"' for name in choices)
    if not isinstance(value, str):
        problems.add("speed", f"{shown(value)} is not a string", allowed)
    elif value in choices:
        return value
    else:
        offering = [name for name in served if value in REGISTRY[name].speeds]
        elsewhere = f' ("{value}" is offered by the tasks {", ".join(offering)})' if offering else ""
        problems.add("speed", f"{shown(value)} is not a speed of task {task.name}{elsewhere}", allowed)
    return DEFAULT_SPEED


def parse_flag(job_input: Mapping[str, Any], name: str, problems: Problems) -> bool:
    value = job_input.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    problems.add(name, f"{shown(value)} is not a boolean", "true or false")
    return False


# --- LoRAs --------------------------------------------------------------------------------------


def parse_loras(value: object, task: Task, limits: Limits, problems: Problems) -> tuple[LoraInput, ...]:
    """The job's own LoRAs: at most ``MAX_LORAS`` objects, each a ``name`` or a ``url``."""
    if value is None:
        return ()
    allowed = f"an array of at most {limits.max_loras} objects with name or url, strength, target"
    if not isinstance(value, list):
        problems.add("loras", f"{shown(value)} is not an array", allowed)
        return ()
    if len(value) > limits.max_loras:
        problems.add("loras", f"{shown(value)} is too many (MAX_LORAS)", allowed)
        return ()
    parsed = [_parse_lora(index, item, task, limits, problems) for index, item in enumerate(value)]
    return tuple(lora for lora in parsed if lora is not None)


def _parse_lora(index: int, item: object, task: Task, limits: Limits, problems: Problems) -> LoraInput | None:
    path = f"loras[{index}]"
    if not isinstance(item, dict):
        problems.add(path, f"{shown(item)} is not an object", "an object with name or url, strength, target")
        return None
    count = len(problems)
    check_unknown(item, f"{path}.", LORA_FIELDS, "field", problems)
    name, url = item.get("name"), item.get("url")
    source = "exactly one of name (a file in the volume's models/loras, e.g. style/film.safetensors) or url (http/https)"
    if (name is None) == (url is None):
        problems.add(path, "both name and url given" if name is not None else "neither name nor url given", source)
    elif name is not None:
        name = _parse_lora_name(f"{path}.name", name, problems)
    else:
        url = parse_url(f"{path}.url", url, problems)
    ctx = Context(limits, task, {}, frozenset(), {})
    values = {
        spec.name: spec.default(ctx) if item.get(spec.name) is None else parse_option(spec, f"{path}.{spec.name}", item[spec.name], ctx, problems)
        for spec in LORA_SPECS
    }  # fmt: skip
    if len(problems) > count:
        return None
    return LoraInput(index, name, url, **values)


def _parse_lora_name(path: str, value: object, problems: Problems) -> str | None:
    allowed = "a LoRA file name as ComfyUI lists it under models/loras (subfolders as dir/name.safetensors)"
    if not isinstance(value, str) or not value.strip():
        problems.add(path, f"{shown(value)} is not a file name", allowed)
    elif len(value) > 255 or "\\" in value or any(part in ("", "..") for part in value.split("/")):
        problems.add(path, f"{shown(value)} is not a file name inside models/loras", allowed)
    else:
        return value
    return None
