"""The job's ``input`` → one validated, frozen :class:`VideoRequest`, or one clear error.

ComfyUI accepts values the model cannot use (width 70, length 6) and silently rounds them, so
every value is checked here, before ComfyUI sees it. Each problem becomes one clause
``<field>: <value received> <what is wrong> (allowed: <what is allowed>)``; all clauses of a
request are joined with ``"; "`` into a single :class:`InvalidInput`, so a client fixes every
field in one round trip.

The job's task (:mod:`worker.tasks`) is read first, because it decides which images and options
the job may have and their defaults. The options are described by a table
(:data:`OPTION_SPECS`): one entry per option with its parser (type), its rule (bounds, step),
its default and its aliases. Adding an option means adding one row.

Conventions the API documents:

* ``null`` for an optional field or option means "not given" (the default applies);
* integers accept JSON integers, integral floats (``832.0``) and decimal strings (``"832"``,
  as the original worker's ``int(...)`` did) — never booleans, never ``832.5``;
* numbers accept integers, floats and numeric strings — never booleans, NaN or infinities;
* ``prompt`` is stored without surrounding whitespace; ``negative_prompt`` is kept as given;
* an option given under two of its names (``length`` and ``num_frames``) is an error.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from worker import sizes
from worker.download import redact_url, url_problem
from worker.encoding import DEFAULT_FORMAT, FORMATS
from worker.errors import InvalidInput
from worker.settings import OUTPUT_MODES, Limits, Settings
from worker.tasks import REGISTRY, custom
from worker.tasks.base import DEFAULT_SPEED, Task
from worker.tasks.common import RESIZE_METHODS

log = logging.getLogger(__name__)

#: Wan's standard negative prompt (the same text the workflow files hold).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

#: ``KSamplerAdvanced.sampler_name`` in ComfyUI v0.30.0 (tests compare with the recording).
SAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
    "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde",
    "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
    "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip

#: ``KSamplerAdvanced.scheduler`` in ComfyUI v0.30.0.
SCHEDULERS: tuple[str, ...] = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)  # fmt: skip

# ComfyUI's own bounds (object_info of v0.30.0); the upper bounds of a job come from Limits, the
# width/height step and minimum from the task's latent node.
LENGTH_STEP = 4  # length: min 1, step 4 → 4n+1 frames
SEED_MAX = 2**64 - 1  # KSamplerAdvanced noise_seed
CFG_MAX = 100.0  # KSamplerAdvanced cfg: 0..100
SHIFT_MAX = 100.0  # ModelSamplingSD3 shift: 0..100
LORA_STRENGTH_MAX = 100.0  # LoraLoaderModelOnly strength_model: -100..100
USER_LORA_STRENGTH_MAX = 4.0  # a job's own LoRAs: beyond ±4 a LoRA only breaks the picture
MIN_FRAME_RATE = 1.0  # VHS_VideoCombine frame_rate: min 1
MAX_INTERPOLATE = 4  # RIFE multiplier the worker offers: 2, 3 or 4 frames per frame

TOP_LEVEL_FIELDS = (
    "prompt", "image", "image_url", "negative_prompt", "options", "output_mode",
    "task", "end_image", "end_image_url", "return_last_frame", "loras", "workflow", "speed",
)  # fmt: skip
#: The fields a custom graph's job may have; the rest belong to the stored graphs.
CUSTOM_FIELDS = ("prompt", "negative_prompt", "image", "image_url", "options", "output_mode", "task", "workflow")
LORA_FIELDS = ("name", "url", "strength", "target")
#: The image fields of every task, in the order a job's images are prepared.
IMAGE_FIELDS = ("image", "end_image")


def _image_allowed(name: str) -> str:
    return (
        f"exactly one of {name} (base64 or a data:image/<type>;base64, URI) "
        f"or {name}_url (an http:// or https:// URL)"
    )


@dataclass(frozen=True)
class ImageInput:
    """One image of the job as given: base64 / data URI, or a URL. Decoded by :mod:`worker.image`."""

    field: str
    b64: str | None = field(default=None, repr=False)
    url: str | None = field(default=None, repr=False)

    @property
    def source_field(self) -> str:
        """The request field it came in: ``image`` or ``image_url`` (``end_image``…)."""
        return self.field if self.b64 is not None else f"{self.field}_url"

    def describe(self) -> str:
        return f"base64, {len(self.b64)} characters" if self.b64 is not None else f"url {redact_url(self.url or '')}"


@dataclass(frozen=True)
class LoraInput:
    """One of the job's own LoRAs: a file ComfyUI lists (``name``) or one to fetch (``url``)."""

    index: int
    name: str | None
    url: str | None = field(repr=False)
    strength: float
    target: str

    @property
    def field(self) -> str:
        """``loras[2]``: where it came in the request, for messages."""
        return f"loras[{self.index}]"

    def describe(self) -> dict[str, object]:
        """For the answer and the log: the name or the URL without its query."""
        source = {"name": self.name} if self.name is not None else {"url": redact_url(self.url or "")}
        return {**source, "strength": self.strength, "target": self.target}


@dataclass(frozen=True)
class VideoRequest:
    """A job, validated: every value is in range and of the type the task's graph needs."""

    task: str
    prompt: str
    negative_prompt: str
    images: tuple[ImageInput, ...]
    width: int
    height: int
    length: int
    steps: int
    cfg: float
    frame_rate: float
    seed: int
    seed_randomized: bool
    shift: float
    sampler_name: str
    scheduler: str
    #: Dual-expert tasks only (None for the others).
    split_step: int | None = None
    lora_strength: float | None = None
    #: Tasks with images only.
    resize: str | None = None
    #: ``base64``, ``s3`` or ``auto``; None means the worker's default (``OUTPUT_MODE``).
    output_mode: str | None = None
    return_last_frame: bool = False
    loras: tuple[LoraInput, ...] = ()
    #: Frames made per generated frame by RIFE (1: off), and the video's frame rate then.
    interpolate: int = 1
    output_frame_rate: float | None = None
    video_format: str = DEFAULT_FORMAT
    crf: int | None = None
    #: A ``resolution`` whose size follows the start image (``aspect_ratio`` auto); see :func:`fit_to_image`.
    fit_resolution: str | None = None
    #: ``default`` or one of the task's speed presets (its LoRAs and defaults).
    speed: str = DEFAULT_SPEED

    def image(self, name: str) -> ImageInput | None:
        return next((image for image in self.images if image.field == name), None)

    @property
    def video_frames(self) -> int:
        """Frames in the video: the generated ones, and RIFE's between each pair."""
        return (self.length - 1) * self.interpolate + 1

    @property
    def video_frame_rate(self) -> float:
        return self.output_frame_rate or self.frame_rate * self.interpolate

    def describe(self) -> dict[str, object]:
        """The request for a log line: no image data, no URL query, no prompt text."""
        options = {name: getattr(self, name) for name in _OPTION_FIELDS}
        return {
            "task": self.task,
            "speed": self.speed,
            "prompt_chars": len(self.prompt),
            "negative_prompt_chars": len(self.negative_prompt),
            **{image.field: image.describe() for image in self.images},
            **options,
            "seed_randomized": self.seed_randomized,
            "output_mode": self.output_mode,
            "return_last_frame": self.return_last_frame,
            "loras": [lora.describe() for lora in self.loras],
        }


@dataclass(frozen=True)
class CustomRequest:
    """A job that brings its own API-format graph (``workflow``): only the values the worker injects."""

    workflow: dict[str, Any] = field(repr=False)
    prompt: str | None
    negative_prompt: str | None
    image: ImageInput | None
    seed: int
    seed_randomized: bool
    output_mode: str | None = None
    task: str = custom.NAME

    @property
    def images(self) -> tuple[ImageInput, ...]:
        return (self.image,) if self.image is not None else ()


def parse_request(
    job_input: object, settings: Settings, *, unavailable_modes: Mapping[str, str] | None = None
) -> VideoRequest | CustomRequest:
    """Validate ``job_input`` (the job's ``input``) for this worker's tasks and limits; raise one InvalidInput.

    ``unavailable_modes`` are output modes this worker cannot serve, each with why
    (:func:`worker.delivery.unavailable_modes`).
    """
    limits, tasks = settings.limits, settings.tasks
    if not isinstance(job_input, dict):
        raise InvalidInput(
            f"input: {shown(job_input)} is not an object "
            f"(allowed: an object with the fields {', '.join(TOP_LEVEL_FIELDS)})"
        )
    problems = _Problems()
    _check_unknown(job_input, "", TOP_LEVEL_FIELDS, "field", problems)
    if job_input.get("workflow") is not None or job_input.get("task") == custom.NAME:
        return _parse_custom(job_input, settings, unavailable_modes or {}, problems)
    task = _parse_task(job_input, tasks, problems)
    prompt = _parse_prompt(job_input.get("prompt"), limits, problems)
    negative_prompt = _parse_negative_prompt(job_input.get("negative_prompt"), limits, problems)
    images: tuple[ImageInput, ...] = ()
    options: dict[str, Any] = {}
    loras: tuple[LoraInput, ...] = ()
    speed = DEFAULT_SPEED
    if task is not None:  # else reported: the task decides which images, options, LoRA targets and speeds a job may have
        images = _parse_images(job_input, task, tasks, problems)
        loras = _parse_loras(job_input.get("loras"), task, limits, problems)
        speed = _parse_speed(job_input.get("speed"), task, tasks, problems)
        task_defaults = task.defaults_for(speed)
        defaults = {**task_defaults, "frame_rate": task_defaults.get("frame_rate") or settings.default_frame_rate}
        options = _parse_options(job_input.get("options"), _Context(limits, task, defaults, bool(images), {}), problems)
    output_mode = _parse_output_mode(job_input.get("output_mode"), unavailable_modes or {}, problems)
    return_last_frame = _parse_flag(job_input, "return_last_frame", problems)
    problems.raise_if_any()
    assert task is not None  # a missing task is always one of the problems
    request = VideoRequest(
        task=task.name,
        prompt=prompt,
        negative_prompt=negative_prompt,
        images=images,
        output_mode=output_mode,
        return_last_frame=return_last_frame,
        loras=loras,
        speed=speed,
        **options,
    )
    log.debug("request: %s", request.describe())
    return request


def fit_to_image(request: VideoRequest, image_width: int, image_height: int, limits: Limits) -> VideoRequest:
    """The request with the size of ``aspect_ratio: auto`` worked out from the start image's size."""
    if request.fit_resolution is None:
        return request
    step = REGISTRY[request.task].size_step
    width, height = sizes.image_size(
        request.fit_resolution, image_width, image_height, step,
        _multiple_below(limits.max_width, step), _multiple_below(limits.max_height, step),
    )  # fmt: skip
    log.info("resolution %s, aspect_ratio auto: %dx%d image → %dx%d", request.fit_resolution, image_width, image_height, width, height)
    return replace(request, width=width, height=height, fit_resolution=None)


# --- Showing values -------------------------------------------------------------------------

_SHOWN_STRING_CHARS = 60


def shown(value: object) -> str:
    """``value`` as a short JSON-like text for an error: strings truncated, containers named."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else f"an integer of {len(str(value))} digits"
    if isinstance(value, float):
        return json.dumps(value)  # NaN / Infinity as JSON writers spell them
    if isinstance(value, str):
        if len(value) <= _SHOWN_STRING_CHARS:
            return json.dumps(value, ensure_ascii=False)
        return json.dumps(value[: _SHOWN_STRING_CHARS - 20], ensure_ascii=False)[:-1] + f'…" ({len(value)} characters)'
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)} items"
    return f"a {type(value).__name__}"


def _number(value: float) -> str:
    """A bound as people write it: 100 rather than 100.0."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class _Problems:
    """Collects every problem of a request, so one error names them all."""

    def __init__(self) -> None:
        self._clauses: list[str] = []

    def add(self, path: str, what: str, allowed: str) -> None:
        self._clauses.append(f"{path}: {what} (allowed: {allowed})")

    def __len__(self) -> int:
        return len(self._clauses)

    def raise_if_any(self) -> None:
        if self._clauses:
            raise InvalidInput("; ".join(self._clauses))


def _check_unknown(
    given: Mapping[Any, Any], prefix: str, known: tuple[str, ...], noun: str, problems: _Problems
) -> None:
    """Report every key of ``given`` that is not in ``known`` (a typo must not be ignored)."""
    for key in given:
        if key not in known:
            name = str(key) if len(str(key)) <= 40 else str(key)[:39] + "…"
            problems.add(f"{prefix}{name}", f"unknown {noun}", ", ".join(known))


# --- Task -------------------------------------------------------------------------------------------


def _tasks_taking(name: str, served: tuple[str, ...]) -> list[str]:
    return [task for task in served if REGISTRY[task].slot(name) is not None]


def _parse_task(job_input: Mapping[str, Any], served: tuple[str, ...], problems: _Problems) -> Task | None:
    """The job's task: ``task`` as given, else chosen by the images given (end image → flf2v, image → i2v)."""
    value = job_input.get("task")
    allowed = ", ".join(served)
    if value is None:
        given = {name for name in IMAGE_FIELDS if job_input.get(name) is not None or job_input.get(f"{name}_url") is not None}
        if "end_image" in given:
            name, why = "flf2v", "end_image was given"
        elif "image" in given:
            name, why = "i2v", "an image was given"
        else:
            textual = " or ".join(f'"{t}"' for t in served if not any(slot.required for slot in REGISTRY[t].images))
            hint = f"; or task {textual} for a video from the prompt alone" if textual else ""
            problems.add("image", "missing (and no image_url)", _image_allowed("image") + hint)
            return None
        if name not in served:
            problems.add("task", f'"{name}" (chosen because {why}) is not served by this worker', allowed)
            return None
        return REGISTRY[name]
    if not isinstance(value, str):
        problems.add("task", f"{shown(value)} is not a string", allowed)
    elif value not in REGISTRY:
        problems.add("task", f"{shown(value)} is not a task", allowed)
    elif value not in served:
        problems.add("task", f"{shown(value)} is not served by this worker (TASKS)", allowed)
    else:
        return REGISTRY[value]
    return None


# --- Prompts and images -------------------------------------------------------------------------


def _parse_prompt(value: object, limits: Limits, problems: _Problems) -> str:
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


def _parse_negative_prompt(value: object, limits: Limits, problems: _Problems) -> str:
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


def _parse_images(
    job_input: Mapping[str, Any], task: Task, served: tuple[str, ...], problems: _Problems
) -> tuple[ImageInput, ...]:
    """The task's images, each as exactly one of ``<field>`` / ``<field>_url``; others refused.

    Only type and form are checked here; the data is decoded by :mod:`worker.image`. An image is
    never echoed: a string is described by its length.
    """
    images = []
    for name in IMAGE_FIELDS:
        url_name = f"{name}_url"
        data, url = job_input.get(name), job_input.get(url_name)
        slot = task.slot(name)
        if slot is None:
            for given in (name, url_name):
                if job_input.get(given) is not None:
                    takers = ", ".join(_tasks_taking(name, served)) or "none on this worker"
                    problems.add(given, f"not used by task {task.name}", f"only with task {takers}")
            continue
        if data is None and url is None:
            if slot.required:
                problems.add(name, f"missing (and no {url_name})", _image_allowed(name))
        elif data is not None and url is not None:
            problems.add(f"{name}, {url_name}", "both given", _image_allowed(name))
        elif data is not None:
            b64 = _parse_image(name, data, problems)
            if b64 is not None:
                images.append(ImageInput(name, b64=b64))
        else:
            checked = _parse_image_url(url_name, url, problems)
            if checked is not None:
                images.append(ImageInput(name, url=checked))
    return tuple(images)


def _parse_image(name: str, value: object, problems: _Problems) -> str | None:
    allowed = "a base64 string or a data:image/<type>;base64, URI"
    if not isinstance(value, str):
        problems.add(name, f"{shown(value)} is not a string", allowed)
    elif not value.strip():
        blank = "an empty string" if not value else f"a string of {len(value)} whitespace characters"
        problems.add(name, blank, allowed)
    else:
        return value
    return None


def _parse_image_url(name: str, value: object, problems: _Problems) -> str | None:
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


def _parse_output_mode(value: object, unavailable: Mapping[str, str], problems: _Problems) -> str | None:
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


def _parse_speed(value: object, task: Task, served: tuple[str, ...], problems: _Problems) -> str:
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


def _parse_flag(job_input: Mapping[str, Any], name: str, problems: _Problems) -> bool:
    value = job_input.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    problems.add(name, f"{shown(value)} is not a boolean", "true or false")
    return False


# --- Custom graphs ------------------------------------------------------------------------------


def _parse_custom(
    job_input: Mapping[str, Any], settings: Settings, unavailable: Mapping[str, str], problems: _Problems
) -> CustomRequest:
    """A job with its own graph: the graph's form and size here; its node classes are checked
    against ComfyUI's at run time (worker/tasks/custom.py)."""
    workflow = _parse_workflow(job_input.get("workflow"), settings, problems)
    for name in job_input:
        if name not in CUSTOM_FIELDS and job_input[name] is not None:
            problems.add(name, "not used with your own workflow", ", ".join(CUSTOM_FIELDS))
    task = job_input.get("task")
    if task not in (None, custom.NAME):
        problems.add("task", f"{shown(task)} cannot run a workflow of your own", f'"{custom.NAME}" or no task')
    limits = settings.limits
    prompt = job_input.get("prompt")
    prompt = _parse_prompt(prompt, limits, problems) if prompt is not None else None
    negative = job_input.get("negative_prompt")
    negative = _parse_negative_prompt(negative, limits, problems) if negative is not None else None
    image = _parse_images({k: job_input.get(k) for k in ("image", "image_url")}, custom.TASK, settings.tasks, problems)
    options = job_input.get("options") or {}
    seed: int | None = None
    if not isinstance(options, dict):
        problems.add("options", f"{shown(options)} is not an object", "an object with seed")
    else:
        for key in options:
            if key != "seed" and options[key] is not None:
                problems.add(f"options.{key}", "not used with your own workflow", "seed")
        if options.get("seed") is not None:
            ctx = _Context(limits, custom.TASK, {}, bool(image), {})
            seed = _parse_option(_SPECS["seed"], "options.seed", options["seed"], ctx, problems)
    output_mode = _parse_output_mode(job_input.get("output_mode"), unavailable, problems)
    problems.raise_if_any()
    return CustomRequest(
        workflow=workflow or {},
        prompt=prompt,
        negative_prompt=negative,
        image=image[0] if image else None,
        seed=seed if seed is not None else secrets.randbelow(SEED_MAX + 1),
        seed_randomized=seed is None,
        output_mode=output_mode,
    )


def _parse_workflow(value: object, settings: Settings, problems: _Problems) -> dict[str, Any] | None:
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
    return value


# --- LoRAs --------------------------------------------------------------------------------------


def _parse_loras(value: object, task: Task, limits: Limits, problems: _Problems) -> tuple[LoraInput, ...]:
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


def _parse_lora(index: int, item: object, task: Task, limits: Limits, problems: _Problems) -> LoraInput | None:
    path = f"loras[{index}]"
    if not isinstance(item, dict):
        problems.add(path, f"{shown(item)} is not an object", "an object with name or url, strength, target")
        return None
    count = len(problems)
    _check_unknown(item, f"{path}.", LORA_FIELDS, "field", problems)
    name, url = item.get("name"), item.get("url")
    source = "exactly one of name (a file in the volume's models/loras, e.g. style/film.safetensors) or url (http/https)"
    if (name is None) == (url is None):
        problems.add(path, "both name and url given" if name is not None else "neither name nor url given", source)
    elif name is not None:
        name = _parse_lora_name(f"{path}.name", name, problems)
    else:
        url = _parse_image_url(f"{path}.url", url, problems)
    ctx = _Context(limits, task, {}, False, {})
    values = {
        spec.name: spec.default(ctx) if item.get(spec.name) is None else _parse_option(spec, f"{path}.{spec.name}", item[spec.name], ctx, problems)
        for spec in LORA_SPECS
    }  # fmt: skip
    if len(problems) > count:
        return None
    return LoraInput(index, name, url, **values)


def _parse_lora_name(path: str, value: object, problems: _Problems) -> str | None:
    allowed = "a LoRA file name as ComfyUI lists it under models/loras (subfolders as dir/name.safetensors)"
    if not isinstance(value, str) or not value.strip():
        problems.add(path, f"{shown(value)} is not a file name", allowed)
    elif len(value) > 255 or "\\" in value or any(part in ("", "..") for part in value.split("/")):
        problems.add(path, f"{shown(value)} is not a file name inside models/loras", allowed)
    else:
        return value
    return None


# --- Options ------------------------------------------------------------------------------------


class _Rejected(ValueError):
    """A value a parser cannot turn into its type; the message says why ("is not an integer")."""


def _parse_int(value: object) -> int:
    """JSON integer, integral float or decimal string (the original worker did ``int(...)``)."""
    if isinstance(value, bool):
        raise _Rejected("is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    raise _Rejected("is not an integer")


def _parse_float(value: object) -> float:
    """JSON number or numeric string; never a boolean, NaN or an infinity."""
    if isinstance(value, bool):
        raise _Rejected("is not a number")
    if isinstance(value, (int, float)) or (isinstance(value, str) and _FLOAT_TEXT.fullmatch(value)):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise _Rejected("is not a finite number") from None
        if not math.isfinite(number):
            raise _Rejected("is not a finite number")
        return number
    raise _Rejected("is not a number")


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Rejected("is not a string")
    return value


_INT_TEXT = re.compile(r"\s*[+-]?[0-9]{1,40}\s*")
_FLOAT_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")


@dataclass(frozen=True)
class _Context:
    """What a rule may look at: the limits, the task and its defaults, and the options parsed so far."""

    limits: Limits
    task: Task
    defaults: Mapping[str, Any]
    has_image: bool
    values: dict[str, Any]

    @property
    def step(self) -> int:
        return self.task.size_step


def _const(value: float) -> Callable[[_Context], float]:
    return lambda c: value


@dataclass(frozen=True)
class _Range:
    """A numeric rule: ``lo <= value <= hi`` and ``value % step == offset``.

    ``lo``, ``hi`` and ``step`` are functions of the context: they come from :class:`Limits`, from
    the task (its size step) or from another option (``split_step <= steps``); ``hi_name`` names
    the upper bound in messages when it is not a constant.
    """

    lo: Callable[[_Context], float]
    hi: Callable[[_Context], float]
    integer: bool = True
    step: Callable[[_Context], int] = _const(1)  # type: ignore[assignment]
    offset: int = 0
    hi_name: Callable[[_Context], str] | None = None

    def allowed(self, ctx: _Context) -> str:
        hi = self.hi_name(ctx) if self.hi_name else _number(self.hi(ctx))
        span = f"from {_number(self.lo(ctx))} to {hi}"
        step = self.step(ctx)
        if step != 1 and self.offset == 0:
            return f"multiples of {step} {span}"
        if step != 1:
            return f"{step}n+{self.offset} {span} ({_example_series(self, ctx)})"
        return f"{'integers' if self.integer else 'numbers'} {span}"

    def problem(self, value: float, ctx: _Context) -> str | None:
        step = self.step(ctx)
        if step != 1 and value % step != self.offset:
            return f"is not a multiple of {step}" if self.offset == 0 else f"is not {step}n+{self.offset}"
        if value < self.lo(ctx):
            return f"is less than {_number(self.lo(ctx))}"
        if value > self.hi(ctx):
            return f"is greater than {self.hi_name(ctx) if self.hi_name else _number(self.hi(ctx))}"
        return None


def _example_series(rule: _Range, ctx: _Context) -> str:
    """``1, 5, 9, …, 161`` — what ``4n+1`` means, spelled out."""
    first = [int(rule.lo(ctx)) + i * rule.step(ctx) for i in range(3)]
    return ", ".join(str(v) for v in first) + f", …, {_number(rule.hi(ctx))}"


@dataclass(frozen=True)
class _Choice:
    """A rule for a COMBO input: the value must be one of ``choices`` (a function of the context:
    some lists depend on the task)."""

    choices: Callable[[_Context], tuple[str, ...]]

    def allowed(self, ctx: _Context) -> str:
        return ", ".join(self.choices(ctx))

    def problem(self, value: str, ctx: _Context) -> str | None:
        return None if value in self.choices(ctx) else "is not one of the allowed values"


@dataclass(frozen=True)
class _Quality:
    """``crf``: the range of the job's ``video_format`` (a format that takes a bitrate takes no crf)."""

    def allowed(self, ctx: _Context) -> str:
        fmt = FORMATS[ctx.values.get("video_format", DEFAULT_FORMAT)]
        if fmt.crf is None:
            return f"no crf with video_format {fmt.name}, which is encoded at a fixed bitrate"
        return f"integers from {fmt.crf[0]} to {fmt.crf[1]} for {fmt.name} (lower: better and bigger; default {fmt.crf[2]})"

    def problem(self, value: int, ctx: _Context) -> str | None:
        crf = FORMATS[ctx.values.get("video_format", DEFAULT_FORMAT)].crf
        if crf is None:
            return "is not used by this video_format"
        return None if crf[0] <= value <= crf[1] else "is out of range"


@dataclass(frozen=True)
class OptionSpec:
    """One option: its canonical name, type, rule, default and aliases."""

    name: str
    parse: Callable[[object], Any]
    rule: _Range | _Choice
    default: Callable[[_Context], Any]
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def _multiple_below(limit: int, step: int, offset: int = 0) -> int:
    """The largest ``step*n + offset`` not above ``limit``: the real maximum a limit allows."""
    return (limit - offset) // step * step + offset


def _steps_name(ctx: _Context) -> str:
    steps = ctx.values.get("steps")
    return f"steps ({steps})" if steps is not None else f"steps (at most {ctx.limits.max_steps})"


def _random_seed(ctx: _Context) -> int:
    return secrets.randbelow(SEED_MAX + 1)


def _split_default(ctx: _Context) -> int | None:
    steps = ctx.values.get("steps")
    return None if steps is None else steps // 2  # None only when steps itself was refused


def _task_default(name: str) -> Callable[[_Context], Any]:
    return lambda c: c.defaults.get(name)


def _max_length(ctx: _Context) -> int:
    return _multiple_below(ctx.limits.max_length, LENGTH_STEP, 1)


def _max_duration(ctx: _Context) -> float:
    return (_max_length(ctx) - 1) / ctx.values.get("frame_rate", ctx.defaults["frame_rate"])


def _dimension(name: str, limit: Callable[[Limits], int]) -> OptionSpec:
    return OptionSpec(
        name,
        _parse_int,
        _Range(lambda c: c.step, lambda c: _multiple_below(limit(c.limits), c.step), step=lambda c: c.step),
        _task_default(name),
    )


#: Every option, in the order it is checked (``split_step`` after ``steps``, ``duration`` after
#: ``frame_rate``, which they depend on). A task takes the ones it lists (``Task.options``).
OPTION_SPECS: tuple[OptionSpec, ...] = (
    _dimension("width", lambda limits: limits.max_width),
    _dimension("height", lambda limits: limits.max_height),
    OptionSpec(
        "length",
        _parse_int,
        _Range(_const(1), _max_length, step=_const(LENGTH_STEP), offset=1),
        _task_default("length"),
        aliases=("num_frames",),
    ),
    OptionSpec("steps", _parse_int, _Range(_const(1), lambda c: c.limits.max_steps), _task_default("steps")),
    OptionSpec(
        "split_step",
        _parse_int,
        _Range(_const(0), lambda c: c.values.get("steps", c.limits.max_steps), hi_name=_steps_name),
        _split_default,
    ),
    OptionSpec(
        "cfg",
        _parse_float,
        _Range(_const(0.0), _const(CFG_MAX), integer=False),
        _task_default("cfg"),
        aliases=("guidance_scale", "cfg_scale"),
    ),
    OptionSpec(
        "frame_rate",
        _parse_float,
        _Range(_const(MIN_FRAME_RATE), lambda c: c.limits.max_frame_rate, integer=False),
        _task_default("frame_rate"),
        aliases=("fps",),
    ),
    OptionSpec("seed", _parse_int, _Range(_const(0), _const(SEED_MAX)), _random_seed),
    OptionSpec("shift", _parse_float, _Range(_const(0.0), _const(SHIFT_MAX), integer=False), _task_default("shift")),
    OptionSpec("sampler_name", _parse_str, _Choice(lambda c: SAMPLER_NAMES), _task_default("sampler_name")),
    OptionSpec("scheduler", _parse_str, _Choice(lambda c: SCHEDULERS), _task_default("scheduler")),
    OptionSpec(
        "lora_strength",
        _parse_float,
        _Range(_const(-LORA_STRENGTH_MAX), _const(LORA_STRENGTH_MAX), integer=False),
        _task_default("lora_strength"),
    ),
    OptionSpec("resize", _parse_str, _Choice(lambda c: tuple(RESIZE_METHODS)), _task_default("resize")),
    OptionSpec("resolution", _parse_str, _Choice(lambda c: sizes.RESOLUTIONS), lambda c: None),
    OptionSpec("aspect_ratio", _parse_str, _Choice(lambda c: sizes.ASPECT_RATIOS), lambda c: None),
    OptionSpec(
        "duration",
        _parse_float,
        _Range(_const(0.0), _max_duration, integer=False, hi_name=lambda c: f"{_number(round(_max_duration(c), 3))} s"),
        lambda c: None,
    ),
    OptionSpec("interpolate", _parse_int, _Range(_const(1), _const(MAX_INTERPOLATE)), lambda c: 1),
    OptionSpec(
        "output_frame_rate",
        _parse_float,
        _Range(_const(MIN_FRAME_RATE), lambda c: c.limits.max_frame_rate, integer=False),
        lambda c: None,
    ),
    OptionSpec("video_format", _parse_str, _Choice(lambda c: tuple(FORMATS)), lambda c: DEFAULT_FORMAT),
    OptionSpec("crf", _parse_int, _Quality(), lambda c: (FORMATS[c.values.get("video_format", DEFAULT_FORMAT)].crf or (0, 0, None))[2]),
)

#: The fields of each of a job's own LoRAs, beside its name or url.
LORA_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "strength",
        _parse_float,
        _Range(_const(-USER_LORA_STRENGTH_MAX), _const(USER_LORA_STRENGTH_MAX), integer=False),
        lambda c: 1.0,
    ),
    OptionSpec("target", _parse_str, _Choice(lambda c: tuple(c.task.lora_targets)), lambda c: "both"),
)

_SPECS = {spec.name: spec for spec in OPTION_SPECS}
#: The request's fields that come from options (presets are turned into width, height and length).
_OPTION_FIELDS = tuple(name for name in _SPECS if name not in ("resolution", "aspect_ratio", "duration"))
#: Options every task takes on top of its own: sizes and length by name.
_PRESET_OPTIONS = ("resolution", "aspect_ratio", "duration")


def _task_specs(task: Task) -> tuple[OptionSpec, ...]:
    accepted = set(task.options) | set(_PRESET_OPTIONS)
    return tuple(spec for spec in OPTION_SPECS if spec.name in accepted)


def _parse_options(value: object, ctx: _Context, problems: _Problems) -> dict[str, Any]:
    """Every option of the task, parsed and checked; defaults fill what was not given; presets applied.

    Returns the request's option fields by canonical name, plus ``seed_randomized`` and ``fit_resolution``.
    """
    specs = _task_specs(ctx.task)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        names = ", ".join(spec.name for spec in specs)
        problems.add("options", f"{shown(value)} is not an object", f"an object with {names}")
        value = {}
    known = tuple(name for spec in specs for name in spec.names)
    for key in value:
        spec = next((s for s in OPTION_SPECS if key in s.names), None)
        if spec is not None and spec not in specs and value[key] is not None:
            problems.add(f"options.{key}", f"not used by task {ctx.task.name}", ", ".join(known))
    _check_unknown({k: v for k, v in value.items() if not any(k in s.names for s in OPTION_SPECS)}, "options.", known, "option", problems)
    given: dict[str, str] = {}
    for spec in specs:
        names = [name for name in spec.names if value.get(name) is not None]
        if len(names) > 1:
            problems.add(
                f"options.{names[1]}", f"given together with options.{names[0]}", f"only one of {', '.join(spec.names)}"
            )
        elif names:
            given[spec.name] = names[0]
            parsed = _parse_option(spec, f"options.{names[0]}", value[names[0]], ctx, problems)
            if parsed is not None:
                ctx.values[spec.name] = parsed
        else:
            default = spec.default(ctx)
            if default is not None:
                ctx.values[spec.name] = default
    values = ctx.values
    values["seed_randomized"] = value.get("seed") is None
    values["fit_resolution"] = _apply_resolution(given, ctx, problems)
    _apply_duration(given, ctx, problems)
    _check_interpolation(given, ctx, problems)
    for name in _PRESET_OPTIONS:
        values.pop(name, None)
    return values


def _apply_resolution(given: Mapping[str, str], ctx: _Context, problems: _Problems) -> str | None:
    """``resolution`` (+ ``aspect_ratio``) → width and height; returns the resolution left to fit to the image."""
    values = ctx.values
    if "resolution" not in given:
        if "aspect_ratio" in given:
            problems.add("options.aspect_ratio", "given without options.resolution", "together with options.resolution")
        return None
    for name in ("width", "height"):
        if name in given:
            problems.add(
                f"options.{given[name]}", "given together with options.resolution",
                "either resolution (with aspect_ratio) or width and height",
            )  # fmt: skip
    resolution = values.get("resolution")
    if resolution is None or any(name in given for name in ("width", "height")):
        return None
    aspect = values.get("aspect_ratio") or ("auto" if ctx.has_image else "16:9")
    if aspect == "auto":
        if not ctx.has_image:
            fixed = ", ".join(a for a in sizes.ASPECT_RATIOS if a != "auto")
            problems.add("options.aspect_ratio", '"auto" needs an image to take the aspect from', fixed)
            return None
        values["width"], values["height"] = sizes.preset_size(resolution, "16:9", ctx.step)
        return resolution
    width, height = sizes.preset_size(resolution, aspect, ctx.step)
    if not _fits(width, height, ctx):
        fitting = [r for r in sizes.RESOLUTIONS if _fits(*sizes.preset_size(r, aspect, ctx.step), ctx)]
        largest = f"{_multiple_below(ctx.limits.max_width, ctx.step)}x{_multiple_below(ctx.limits.max_height, ctx.step)}"
        problems.add(
            "options.resolution",
            f'"{resolution}" at {aspect} is {width}x{height}, larger than this worker allows ({largest})',
            ", ".join(fitting) or "width and height within the maximum",
        )
        return None
    values["width"], values["height"] = width, height
    return None


def _fits(width: int, height: int, ctx: _Context) -> bool:
    return width <= ctx.limits.max_width and height <= ctx.limits.max_height


def _apply_duration(given: Mapping[str, str], ctx: _Context, problems: _Problems) -> None:
    """``duration`` (seconds) → ``length``, the nearest 4n+1 frame count at the job's frame rate."""
    if "duration" not in given:
        return
    if "length" in given:
        problems.add(f"options.{given['length']}", "given together with options.duration", "only one of length or duration")
        return
    duration, frame_rate = ctx.values.get("duration"), ctx.values.get("frame_rate")
    if duration is None or frame_rate is None:
        return  # already reported
    ctx.values["length"] = min(sizes.length_for(duration, frame_rate), _max_length(ctx))


def _check_interpolation(given: Mapping[str, str], ctx: _Context, problems: _Problems) -> None:
    """The interpolated video must stay within ``MAX_OUTPUT_FRAMES`` and, at its frame rate, ``MAX_FRAME_RATE``."""
    values, limits = ctx.values, ctx.limits
    factor, length, rate = values.get("interpolate", 1), values.get("length"), values.get("frame_rate")
    if factor == 1 or length is None or rate is None:
        return
    frames = (length - 1) * factor + 1
    if frames > limits.max_output_frames:
        problems.add(
            "options.interpolate",
            f"{factor} makes {frames} frames of the {length} generated, more than MAX_OUTPUT_FRAMES ({limits.max_output_frames})",
            f"a factor whose (length − 1) × factor + 1 is at most {limits.max_output_frames}, or fewer frames",
        )
    if "output_frame_rate" not in given and rate * factor > limits.max_frame_rate:
        problems.add(
            "options.interpolate",
            f"{factor} at frame_rate {_number(rate)} plays at {_number(rate * factor)} fps, more than MAX_FRAME_RATE ({_number(limits.max_frame_rate)})",
            "a smaller factor, a lower frame_rate (16 for Wan's natural motion), or options.output_frame_rate",
        )


def _parse_option(spec: OptionSpec, path: str, raw: object, ctx: _Context, problems: _Problems) -> Any:
    """One value of ``spec``, or None after reporting why it is refused under ``path`` (the name used)."""
    try:
        parsed = spec.parse(raw)
    except _Rejected as exc:
        problems.add(path, f"{shown(raw)} {exc}", spec.rule.allowed(ctx))
        return None
    problem = spec.rule.problem(parsed, ctx)
    if problem is not None:
        problems.add(path, f"{shown(raw)} {problem}", spec.rule.allowed(ctx))
        return None
    return parsed
