"""The job's ``input`` → one validated, frozen :class:`VideoRequest`, or one clear error.

ComfyUI accepts values the model cannot use (width 70, length 6) and silently rounds them, so
every value is checked here, before ComfyUI sees it. Each problem becomes one clause
``<field>: <value received> <what is wrong> (allowed: <what is allowed>)``; all clauses of a
request are joined with ``"; "`` into a single :class:`InvalidInput`, so a client fixes every
field in one round trip.

The options are described by a table (:data:`OPTION_SPECS`): one entry per option with its
parser (type), its rule (bounds, step), its default and its aliases. Adding an option means
adding one row.

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
from dataclasses import dataclass, field
from typing import Any

from comfy_bootstrap.config import OUTPUT_MODES, Limits
from worker.download import redact_url, url_problem
from worker.errors import InvalidInput

log = logging.getLogger(__name__)

#: Wan's standard negative prompt (the same text the workflow file holds).
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

#: The user's word for fitting an image of another aspect ratio → ``ImageResize+``'s ``method``.
RESIZE_METHODS: dict[str, str] = {"crop": "fill / crop", "pad": "pad", "stretch": "stretch"}

# ComfyUI's own bounds (object_info of v0.30.0); the upper bounds of a job come from Limits.
DIMENSION_STEP = 16  # WanImageToVideo width/height: min 16, step 16
MIN_DIMENSION = 16
LENGTH_STEP = 4  # WanImageToVideo length: min 1, step 4 → 4n+1 frames
SEED_MAX = 2**64 - 1  # KSamplerAdvanced noise_seed
CFG_MAX = 100.0  # KSamplerAdvanced cfg: 0..100
SHIFT_MAX = 100.0  # ModelSamplingSD3 shift: 0..100
LORA_STRENGTH_MAX = 100.0  # LoraLoaderModelOnly strength_model: -100..100
MIN_FRAME_RATE = 1.0  # VHS_VideoCombine frame_rate: min 1

TOP_LEVEL_FIELDS = ("prompt", "image", "image_url", "negative_prompt", "options", "output_mode")
_IMAGE_ALLOWED = (
    "exactly one of image (base64 or a data:image/<type>;base64, URI) "
    "or image_url (an http:// or https:// URL)"
)


@dataclass(frozen=True)
class VideoRequest:
    """A job, validated: every value is in range and of the type the workflow needs."""

    prompt: str
    negative_prompt: str
    #: The ``image`` field as given (raw base64 or a data URI); decoded by :mod:`worker.image`.
    image_b64: str | None = field(repr=False)
    image_url: str | None = field(repr=False)
    width: int
    height: int
    length: int
    steps: int
    split_step: int
    cfg: float
    frame_rate: float
    seed: int
    seed_randomized: bool
    shift: float
    sampler_name: str
    scheduler: str
    lora_strength: float
    resize: str
    #: ``base64``, ``s3`` or ``auto``; None means the worker's default (``OUTPUT_MODE``).
    output_mode: str | None = None

    @property
    def resize_method(self) -> str:
        """``resize`` as ComfyUI's ``ImageResize+`` calls it."""
        return RESIZE_METHODS[self.resize]

    def describe(self) -> dict[str, object]:
        """The request for a log line: no image data, no URL query, no prompt text."""
        if self.image_b64 is not None:
            image = f"base64, {len(self.image_b64)} characters"
        else:
            image = f"url {redact_url(self.image_url or '')}"
        options = {name: getattr(self, name) for name in _OPTION_NAMES}
        return {
            "prompt_chars": len(self.prompt),
            "negative_prompt_chars": len(self.negative_prompt),
            "image": image,
            **options,
            "seed_randomized": self.seed_randomized,
            "output_mode": self.output_mode,
        }


def parse_request(job_input: object, limits: Limits, *, s3_unavailable: str | None = None) -> VideoRequest:
    """Validate ``job_input`` (the job's ``input``) against ``limits``; raise one InvalidInput.

    ``s3_unavailable`` is why this worker cannot store videos in S3 (None when it can): a job
    asking for ``output_mode: "s3"`` is then refused here, before any work is done.
    """
    if not isinstance(job_input, dict):
        raise InvalidInput(
            f"input: {shown(job_input)} is not an object "
            f"(allowed: an object with the fields {', '.join(TOP_LEVEL_FIELDS)})"
        )
    problems = _Problems()
    _check_unknown(job_input, "", TOP_LEVEL_FIELDS, "field", problems)
    prompt = _parse_prompt(job_input.get("prompt"), limits, problems)
    negative_prompt = _parse_negative_prompt(job_input.get("negative_prompt"), limits, problems)
    image_b64, image_url = _parse_image_source(job_input, problems)
    options = _parse_options(job_input.get("options"), limits, problems)
    output_mode = _parse_output_mode(job_input.get("output_mode"), s3_unavailable, problems)
    problems.raise_if_any()
    request = VideoRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        image_b64=image_b64,
        image_url=image_url,
        seed_randomized=options.pop("seed_randomized"),
        output_mode=output_mode,
        **options,
    )
    log.debug("request: %s", request.describe())
    return request


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


# --- Prompts and image ------------------------------------------------------------------------


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


def _parse_image_source(job_input: Mapping[str, Any], problems: _Problems) -> tuple[str | None, str | None]:
    """Exactly one of ``image`` / ``image_url``; only their type and form are checked here.

    The base64 payload is decoded (and its errors reported) by :mod:`worker.image`. The image is
    never echoed: a string is described by its length.
    """
    image, url = job_input.get("image"), job_input.get("image_url")
    if image is None and url is None:
        problems.add("image", "missing (and no image_url)", _IMAGE_ALLOWED)
        return None, None
    if image is not None and url is not None:
        problems.add("image, image_url", "both given", _IMAGE_ALLOWED)
        return None, None
    if image is not None:
        return _parse_image(image, problems), None
    return None, _parse_image_url(url, problems)


def _parse_image(value: object, problems: _Problems) -> str | None:
    allowed = "a base64 string or a data:image/<type>;base64, URI"
    if not isinstance(value, str):
        problems.add("image", f"{shown(value)} is not a string", allowed)
    elif not value.strip():
        blank = "an empty string" if not value else f"a string of {len(value)} whitespace characters"
        problems.add("image", blank, allowed)
    else:
        return value
    return None


def _parse_image_url(value: object, problems: _Problems) -> str | None:
    allowed = "an http:// or https:// URL"
    if not isinstance(value, str):
        problems.add("image_url", f"{shown(value)} is not a string", allowed)
        return None
    url = value.strip()
    problem = url_problem(url)
    if problem is not None:
        problems.add("image_url", f"{shown(redact_url(url, 100))} {problem}", allowed)
        return None
    return url


def _parse_output_mode(value: object, s3_unavailable: str | None, problems: _Problems) -> str | None:
    """One of OUTPUT_MODES, or None for the worker's default; ``s3`` only where S3 is configured."""
    allowed = ", ".join(OUTPUT_MODES)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add("output_mode", f"{shown(value)} is not a string", allowed)
    elif value not in OUTPUT_MODES:
        problems.add("output_mode", f"{shown(value)} is not one of the allowed values", allowed)
    elif value == "s3" and s3_unavailable is not None:
        others = ", ".join(mode for mode in OUTPUT_MODES if mode != "s3")
        problems.add("output_mode", f'"s3" is not available on this worker: {s3_unavailable}', others)
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
    """What a rule may look at: the limits and the options already parsed (in table order)."""

    limits: Limits
    values: dict[str, Any]


@dataclass(frozen=True)
class _Range:
    """A numeric rule: ``lo <= value <= hi`` and ``value % step == offset``.

    ``hi`` is a function of the context because it comes from :class:`Limits` or from another
    option (``split_step <= steps``); ``hi_name`` names it in messages when it is not a constant.
    """

    lo: float
    hi: Callable[[_Context], float]
    integer: bool = True
    step: int = 1
    offset: int = 0
    hi_name: Callable[[_Context], str] | None = None

    def allowed(self, ctx: _Context) -> str:
        hi = self.hi_name(ctx) if self.hi_name else _number(self.hi(ctx))
        span = f"from {_number(self.lo)} to {hi}"
        if self.step != 1 and self.offset == 0:
            return f"multiples of {self.step} {span}"
        if self.step != 1:
            return f"{self.step}n+{self.offset} {span} ({_example_series(self, ctx)})"
        return f"{'integers' if self.integer else 'numbers'} {span}"

    def problem(self, value: float, ctx: _Context) -> str | None:
        if self.step != 1 and value % self.step != self.offset:
            if self.offset == 0:
                return f"is not a multiple of {self.step}"
            return f"is not {self.step}n+{self.offset}"
        if value < self.lo:
            return f"is less than {_number(self.lo)}"
        if value > self.hi(ctx):
            return f"is greater than {self.hi_name(ctx) if self.hi_name else _number(self.hi(ctx))}"
        return None


def _example_series(rule: _Range, ctx: _Context) -> str:
    """``1, 5, 9, …, 161`` — what ``4n+1`` means, spelled out."""
    first = [int(rule.lo) + i * rule.step for i in range(3)]
    return ", ".join(str(v) for v in first) + f", …, {_number(rule.hi(ctx))}"


@dataclass(frozen=True)
class _Choice:
    """A rule for a COMBO input: the value must be one of ``choices``."""

    choices: tuple[str, ...]

    def allowed(self, ctx: _Context) -> str:
        return ", ".join(self.choices)

    def problem(self, value: str, ctx: _Context) -> str | None:
        return None if value in self.choices else "is not one of the allowed values"


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


#: Every option, in the order it is checked (``split_step`` after ``steps``, which it depends on).
OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "width",
        _parse_int,
        _Range(MIN_DIMENSION, lambda c: _multiple_below(c.limits.max_width, DIMENSION_STEP), step=DIMENSION_STEP),
        lambda c: 832,
    ),
    OptionSpec(
        "height",
        _parse_int,
        _Range(MIN_DIMENSION, lambda c: _multiple_below(c.limits.max_height, DIMENSION_STEP), step=DIMENSION_STEP),
        lambda c: 832,
    ),
    OptionSpec(
        "length",
        _parse_int,
        _Range(1, lambda c: _multiple_below(c.limits.max_length, LENGTH_STEP, 1), step=LENGTH_STEP, offset=1),
        lambda c: 81,
        aliases=("num_frames",),
    ),
    OptionSpec("steps", _parse_int, _Range(1, lambda c: c.limits.max_steps), lambda c: 6),
    OptionSpec(
        "split_step",
        _parse_int,
        _Range(0, lambda c: c.values.get("steps", c.limits.max_steps), hi_name=_steps_name),
        _split_default,
    ),
    OptionSpec(
        "cfg",
        _parse_float,
        _Range(0.0, lambda c: CFG_MAX, integer=False),
        lambda c: 1.0,
        aliases=("guidance_scale", "cfg_scale"),
    ),
    OptionSpec(
        "frame_rate",
        _parse_float,
        _Range(MIN_FRAME_RATE, lambda c: c.limits.max_frame_rate, integer=False),
        lambda c: 24.0,
        aliases=("fps",),
    ),
    OptionSpec("seed", _parse_int, _Range(0, lambda c: SEED_MAX), _random_seed),
    OptionSpec("shift", _parse_float, _Range(0.0, lambda c: SHIFT_MAX, integer=False), lambda c: 8.0),
    OptionSpec("sampler_name", _parse_str, _Choice(SAMPLER_NAMES), lambda c: "euler"),
    OptionSpec("scheduler", _parse_str, _Choice(SCHEDULERS), lambda c: "simple"),
    OptionSpec(
        "lora_strength",
        _parse_float,
        _Range(-LORA_STRENGTH_MAX, lambda c: LORA_STRENGTH_MAX, integer=False),
        lambda c: 1.0,
    ),
    OptionSpec("resize", _parse_str, _Choice(tuple(RESIZE_METHODS)), lambda c: "crop"),
)

_OPTION_NAMES = tuple(spec.name for spec in OPTION_SPECS)
_KNOWN_OPTION_KEYS = tuple(name for spec in OPTION_SPECS for name in spec.names)


def _parse_options(value: object, limits: Limits, problems: _Problems) -> dict[str, Any]:
    """Every option, parsed and checked against its spec; defaults fill what was not given.

    Returns the option values by canonical name plus ``seed_randomized``.
    """
    if value is None:
        value = {}
    if not isinstance(value, dict):
        problems.add("options", f"{shown(value)} is not an object", f"an object with {', '.join(_OPTION_NAMES)}")
        value = {}
    _check_unknown(value, "options.", _KNOWN_OPTION_KEYS, "option", problems)
    ctx = _Context(limits, {})
    for spec in OPTION_SPECS:
        given = [name for name in spec.names if value.get(name) is not None]
        if len(given) > 1:
            problems.add(
                f"options.{given[1]}",
                f"given together with options.{given[0]}",
                f"only one of {', '.join(spec.names)}",
            )
        elif given:
            parsed = _parse_option(spec, given[0], value[given[0]], ctx, problems)
            if parsed is not None:
                ctx.values[spec.name] = parsed
        else:
            default = spec.default(ctx)
            if default is not None:
                ctx.values[spec.name] = default
    ctx.values["seed_randomized"] = value.get("seed") is None
    return ctx.values


def _parse_option(spec: OptionSpec, key: str, raw: object, ctx: _Context, problems: _Problems) -> Any:
    """One option's value, or None after reporting why it is refused (under the name used)."""
    path = f"options.{key}"
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
