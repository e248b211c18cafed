"""The options a job may give (``options.<name>``): one table, with each option's type, rule,
default and aliases, and the presets that become width, height and length.

Adding an option means adding one row to :data:`OPTION_SPECS` and naming it in the tasks that
take it (``Task.options``). Conventions the API documents: ``null`` means "not given" (the
default applies); an option given under two of its names (``length`` and ``num_frames``) is an
error.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from worker import sizes, step_cache
from worker.encoding import DEFAULT_FORMAT, FORMATS
from worker.errors import InvalidInput
from worker.inputs.base import PreparedInput
from worker.request.model import VideoRequest
from worker.request.rules import (
    Choice,
    Context,
    OptionSpec,
    Problems,
    Range,
    check_unknown,
    const,
    multiple_below,
    number,
    parse_float,
    parse_int,
    parse_option,
    parse_str,
    shown,
)
from worker.settings import Limits
from worker.tasks import REGISTRY
from worker.tasks.base import Task
from worker.tasks.common import INTERPOLATION_MODELS, RESIZE_METHODS

log = logging.getLogger(__name__)

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
MAX_INTERPOLATE = 4  # FrameInterpolate multiplier the worker offers: 2, 3 or 4 frames per frame
#: ``options.fit``: the media whose length the video's length follows.
FIT_TO: tuple[str, ...] = ("audio", "video")



@dataclass(frozen=True)
class _Quality:
    """``crf``: the range of the job's ``video_format`` (a format that takes a bitrate takes no crf)."""

    def allowed(self, ctx: Context) -> str:
        fmt = FORMATS[ctx.values.get("video_format", DEFAULT_FORMAT)]
        if fmt.crf is None:
            return f"no crf with video_format {fmt.name}, which is encoded at a fixed bitrate"
        return f"integers from {fmt.crf[0]} to {fmt.crf[1]} for {fmt.name} (lower: better and bigger; default {fmt.crf[2]})"

    def problem(self, value: int, ctx: Context) -> str | None:
        crf = FORMATS[ctx.values.get("video_format", DEFAULT_FORMAT)].crf
        if crf is None:
            return "is not used by this video_format"
        return None if crf[0] <= value <= crf[1] else "is out of range"


def _steps_name(ctx: Context) -> str:
    steps = ctx.values.get("steps")
    return f"steps ({steps})" if steps is not None else f"steps (at most {ctx.limits.max_steps})"


def _random_seed(ctx: Context) -> int:
    return secrets.randbelow(SEED_MAX + 1)


def _split_default(ctx: Context) -> int | None:
    steps = ctx.values.get("steps")
    return None if steps is None else steps // 2  # None only when steps itself was refused


def _task_default(name: str) -> Callable[[Context], Any]:
    return lambda c: c.defaults.get(name)


def _interpolation_model_default(ctx: Context) -> str | None:
    """The first model (RIFE) when the job interpolates, else none."""
    return next(iter(INTERPOLATION_MODELS)) if ctx.values.get("interpolate", 1) > 1 else None


def max_length(ctx: Context) -> int:
    return multiple_below(ctx.limits.max_length, LENGTH_STEP, 1)


def _max_duration(ctx: Context) -> float:
    return (max_length(ctx) - 1) / ctx.values.get("frame_rate", ctx.defaults["frame_rate"])


def _dimension(name: str, limit: Callable[[Limits], int]) -> OptionSpec:
    return OptionSpec(
        name,
        parse_int,
        Range(lambda c: c.step, lambda c: multiple_below(limit(c.limits), c.step), step=lambda c: c.step),
        _task_default(name),
    )


#: Every option, in the order it is checked (``split_step`` after ``steps``, ``duration`` after
#: ``frame_rate``, which they depend on). A task takes the ones it lists (``Task.options``).
OPTION_SPECS: tuple[OptionSpec, ...] = (
    _dimension("width", lambda limits: limits.max_width),
    _dimension("height", lambda limits: limits.max_height),
    OptionSpec(
        "length",
        parse_int,
        Range(const(1), max_length, step=const(LENGTH_STEP), offset=1),
        _task_default("length"),
        aliases=("num_frames",),
    ),
    OptionSpec("steps", parse_int, Range(const(1), lambda c: c.limits.max_steps), _task_default("steps")),
    OptionSpec(
        "split_step",
        parse_int,
        Range(const(0), lambda c: c.values.get("steps", c.limits.max_steps), hi_name=_steps_name),
        _split_default,
    ),
    OptionSpec(
        "cfg",
        parse_float,
        Range(const(0.0), const(CFG_MAX), integer=False),
        _task_default("cfg"),
        aliases=("guidance_scale", "cfg_scale"),
    ),
    OptionSpec(
        "frame_rate",
        parse_float,
        Range(const(MIN_FRAME_RATE), lambda c: c.limits.max_frame_rate, integer=False),
        _task_default("frame_rate"),
        aliases=("fps",),
    ),
    OptionSpec("seed", parse_int, Range(const(0), const(SEED_MAX)), _random_seed),
    OptionSpec("shift", parse_float, Range(const(0.0), const(SHIFT_MAX), integer=False), _task_default("shift")),
    OptionSpec("sampler_name", parse_str, Choice(lambda c: SAMPLER_NAMES), _task_default("sampler_name")),
    OptionSpec("scheduler", parse_str, Choice(lambda c: SCHEDULERS), _task_default("scheduler")),
    OptionSpec(
        "lora_strength",
        parse_float,
        Range(const(-LORA_STRENGTH_MAX), const(LORA_STRENGTH_MAX), integer=False),
        _task_default("lora_strength"),
    ),
    OptionSpec("resize", parse_str, Choice(lambda c: tuple(RESIZE_METHODS)), _task_default("resize")),
    OptionSpec("resolution", parse_str, Choice(lambda c: sizes.RESOLUTIONS), lambda c: None),
    OptionSpec("aspect_ratio", parse_str, Choice(lambda c: sizes.ASPECT_RATIOS), lambda c: None),
    OptionSpec(
        "duration",
        parse_float,
        Range(const(0.0), _max_duration, integer=False, hi_name=lambda c: f"{number(round(_max_duration(c), 3))} s"),
        lambda c: None,
    ),
    OptionSpec("interpolate", parse_int, Range(const(1), const(MAX_INTERPOLATE)), lambda c: 1),
    OptionSpec("interpolation_model", parse_str, Choice(lambda c: tuple(INTERPOLATION_MODELS)), _interpolation_model_default),
    OptionSpec(
        "output_frame_rate",
        parse_float,
        Range(const(MIN_FRAME_RATE), lambda c: c.limits.max_frame_rate, integer=False),
        lambda c: None,
    ),
    OptionSpec("video_format", parse_str, Choice(lambda c: tuple(FORMATS)), lambda c: DEFAULT_FORMAT),
    OptionSpec("crf", parse_int, _Quality(), lambda c: (FORMATS[c.values.get("video_format", DEFAULT_FORMAT)].crf or (0, 0, None))[2]),
    OptionSpec("fit", parse_str, Choice(lambda c: FIT_TO), lambda c: None),
    OptionSpec("control", parse_str, Choice(lambda c: c.task.choices["control"] if c.task else ()), _task_default("control")),
    OptionSpec("mode", parse_str, Choice(lambda c: c.task.choices["mode"] if c.task else ()), _task_default("mode")),
    OptionSpec("cache", parse_str, Choice(lambda c: step_cache.MODES), lambda c: None),
)


#: The fields of each of a job's own LoRAs, beside its name or url.
LORA_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "strength",
        parse_float,
        Range(const(-USER_LORA_STRENGTH_MAX), const(USER_LORA_STRENGTH_MAX), integer=False),
        lambda c: 1.0,
    ),
    OptionSpec("target", parse_str, Choice(lambda c: tuple(c.task.lora_targets)), lambda c: "both"),
)


SPECS = {spec.name: spec for spec in OPTION_SPECS}


#: Options every task takes on top of its own: sizes and length by name.
PRESET_OPTIONS = ("resolution", "aspect_ratio", "duration")


def task_specs(task: Task) -> tuple[OptionSpec, ...]:
    """The options a task takes: its own, and the presets of what it has (``duration`` only with ``length``)."""
    presets = [name for name in PRESET_OPTIONS if name != "duration" or "length" in task.options]
    accepted = set(task.options) | set(presets)
    return tuple(spec for spec in OPTION_SPECS if spec.name in accepted)


def parse_options(value: object, ctx: Context, problems: Problems) -> dict[str, Any]:
    """Every option of the task, parsed and checked; defaults fill what was not given; presets applied.

    Returns the request's option fields by canonical name, plus ``seed_randomized`` and ``fit_resolution``.
    """
    specs = task_specs(ctx.task)
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
    check_unknown({k: v for k, v in value.items() if not any(k in s.names for s in OPTION_SPECS)}, "options.", known, "option", problems)
    given: dict[str, str] = {}
    for spec in specs:
        names = [name for name in spec.names if value.get(name) is not None]
        if len(names) > 1:
            problems.add(
                f"options.{names[1]}", f"given together with options.{names[0]}", f"only one of {', '.join(spec.names)}"
            )
        elif names:
            given[spec.name] = names[0]
            parsed = parse_option(spec, f"options.{names[0]}", value[names[0]], ctx, problems)
            if parsed is not None:
                ctx.values[spec.name] = parsed
        else:
            default = spec.default(ctx)
            if default is not None:
                ctx.values[spec.name] = default
    values = ctx.values
    offered = {spec.name for spec in specs}
    for name, fixed in ctx.defaults.items():  # a default of an option the task does not offer is fixed (s2v's 16 fps)
        if name not in offered and fixed is not None:
            values.setdefault(name, fixed)
    values["seed_randomized"] = value.get("seed") is None
    values["fit_resolution"] = _apply_resolution(given, ctx, problems)
    _apply_duration(given, ctx, problems)
    _fit_by_default(given, ctx)
    _check_fit(given, ctx, problems)
    _check_interpolation(given, ctx, problems)
    _check_cache(ctx, problems)
    for name in PRESET_OPTIONS:
        values.pop(name, None)
    return values


def _apply_resolution(given: Mapping[str, str], ctx: Context, problems: Problems) -> str | None:
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
    aspect = values.get("aspect_ratio") or ("auto" if ctx.has_picture else "16:9")
    if aspect == "auto":
        if not ctx.has_picture:
            fixed = ", ".join(a for a in sizes.ASPECT_RATIOS if a != "auto")
            problems.add("options.aspect_ratio", '"auto" needs an image or a video to take the aspect from', fixed)
            return None
        values["width"], values["height"] = sizes.preset_size(resolution, "16:9", ctx.step)
        return resolution
    width, height = sizes.preset_size(resolution, aspect, ctx.step)
    if not _fits(width, height, ctx):
        fitting = [r for r in sizes.RESOLUTIONS if _fits(*sizes.preset_size(r, aspect, ctx.step), ctx)]
        largest = f"{multiple_below(ctx.limits.max_width, ctx.step)}x{multiple_below(ctx.limits.max_height, ctx.step)}"
        problems.add(
            "options.resolution",
            f'"{resolution}" at {aspect} is {width}x{height}, larger than this worker allows ({largest})',
            ", ".join(fitting) or "width and height within the maximum",
        )
        return None
    values["width"], values["height"] = width, height
    return None


def _fits(width: int, height: int, ctx: Context) -> bool:
    return width <= ctx.limits.max_width and height <= ctx.limits.max_height


def _apply_duration(given: Mapping[str, str], ctx: Context, problems: Problems) -> None:
    """``duration`` (seconds) → ``length``, the nearest 4n+1 frame count at the job's frame rate."""
    if "duration" not in given:
        return
    if "length" in given:
        problems.add(f"options.{given['length']}", "given together with options.duration", "only one of length or duration")
        return
    duration, frame_rate = ctx.values.get("duration"), ctx.values.get("frame_rate")
    if duration is None or frame_rate is None:
        return  # already reported
    ctx.values["length"] = min(sizes.length_for(duration, frame_rate), max_length(ctx))


def _fit_by_default(given: Mapping[str, str], ctx: Context) -> None:
    """A task whose length follows a medium unless told otherwise (its defaults' ``fit``: control's
    video) keeps that when the job gives no ``fit``, ``length`` or ``duration``."""
    default = ctx.defaults.get("fit")
    if default in ctx.media and not {"fit", "length", "duration"} & set(given):  # a missing medium is reported already
        ctx.values["fit"] = default


def _check_fit(given: Mapping[str, str], ctx: Context, problems: Problems) -> None:
    """``fit`` needs its media, and decides the length itself (worked out once the track is decoded: :func:`fit_length`)."""
    media = ctx.values.get("fit")
    if media is None:
        return
    if media not in ctx.media:
        problems.add("options.fit", f'"{media}" given without {media}', f"together with {media} or {media}_url")
    for other in ("length", "duration"):
        if other in given:
            problems.add(f"options.{given[other]}", "given together with options.fit", f"only one of {other} or fit")


def _check_interpolation(given: Mapping[str, str], ctx: Context, problems: Problems) -> None:
    """The interpolated video must stay within ``MAX_OUTPUT_FRAMES`` and, at its frame rate, ``MAX_FRAME_RATE``;
    an ``interpolation_model`` needs an ``interpolate`` to use it."""
    values, limits = ctx.values, ctx.limits
    factor = values.get("interpolate", None if "interpolate" in given else 1)  # None: refused already
    length, rate = values.get("length"), values.get("frame_rate")
    if factor == 1 and "interpolation_model" in given:
        problems.add(
            f"options.{given['interpolation_model']}", "given without options.interpolate",
            f"together with options.interpolate from 2 to {MAX_INTERPOLATE}",
        )  # fmt: skip
    if factor in (None, 1) or length is None or rate is None:
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
            f"{factor} at frame_rate {number(rate)} plays at {number(rate * factor)} fps, more than MAX_FRAME_RATE ({number(limits.max_frame_rate)})",
            "a smaller factor, a lower frame_rate (16 for Wan's natural motion), or options.output_frame_rate",
        )


def _check_cache(ctx: Context, problems: Problems) -> None:
    """A step cache needs steps enough to skip some (:data:`worker.step_cache.MIN_STEPS`)."""
    mode, steps = ctx.values.get("cache"), ctx.values.get("steps")
    if mode is None or steps is None or steps >= step_cache.MIN_STEPS:
        return
    problems.add(
        "options.cache",
        f'"{mode}" cannot help a run of {steps} steps: each sampler samples its first steps in full',
        f"with options.steps of {step_cache.MIN_STEPS} or more (ti2v-5b's and s2v's default 20, not the step-distilled 6 or 4), "
        "or no cache",
    )


def fit_to_image(request: VideoRequest, image_width: int, image_height: int, limits: Limits) -> VideoRequest:
    """The request with the size of ``aspect_ratio: auto`` worked out from the start image's size."""
    if request.fit_resolution is None:
        return request
    step = REGISTRY[request.task].size_step
    width, height = sizes.image_size(
        request.fit_resolution, image_width, image_height, step,
        multiple_below(limits.max_width, step), multiple_below(limits.max_height, step),
    )  # fmt: skip
    log.info("resolution %s, aspect_ratio auto: %dx%d image → %dx%d", request.fit_resolution, image_width, image_height, width, height)
    return replace(request, width=width, height=height, fit_resolution=None)


def adapt_to_media(request: VideoRequest, prepared: Mapping[str, PreparedInput], limits: Limits) -> VideoRequest:
    """What a job's media decide (a task's ``adapt`` unless it has its own): the size of ``aspect_ratio:
    auto`` from the first medium with a picture in the task's order (its start image; control's video),
    the length of ``fit`` from its track or clip."""
    order = [slot.field for slot in REGISTRY[request.task].inputs]
    size = next((prepared[name].size for name in order if name in prepared and prepared[name].size is not None), None)
    if size is not None:
        request = fit_to_image(request, *size, limits)
    if request.fit is not None:
        request = fit_length(request, prepared[request.fit], limits)
    return request


def fit_length(request: VideoRequest, media: PreparedInput, limits: Limits) -> VideoRequest:
    """``fit``: for a track, the fewest frames (4n+1) whose video lasts as long as it; for a clip (whose
    frames are at the task's rate already), the most frames (4n+1) that each follow one of its frames."""
    if request.fit is None:
        return request
    longest = multiple_below(limits.max_length, LENGTH_STEP, 1)
    seconds = media.seconds or 0.0
    if media.frames is not None:
        length = max(media.frames - 1, 0) // LENGTH_STEP * LENGTH_STEP + 1
        too_long = length > longest
    else:
        needed = math.ceil(seconds * request.video_frame_rate - 1e-6)  # frames the video must show
        length = math.ceil(max(needed - 1, 0) / request.interpolate / LENGTH_STEP) * LENGTH_STEP + 1
        too_long = length > longest or (length - 1) * request.interpolate + 1 > limits.max_output_frames
    if too_long:
        covered = ((longest - 1) * request.interpolate + 1) / request.video_frame_rate
        other = "task s2v, whose video follows the whole track" if request.fit == "audio" else "a shorter part of it"
        raise InvalidInput(
            f"options.fit: the {request.fit} is {seconds:g} s; at {number(request.video_frame_rate)} fps that needs {length} frames, "
            f"more than MAX_LENGTH ({longest}) (allowed: {request.fit} of at most {covered:.2f} s at this frame rate; cut it with "
            f"{request.fit}_end, or use {other})"
        )
    log.info("fit %s: %.2f s of %s at %s fps → %d frames", request.fit, seconds, request.fit, number(request.video_frame_rate), length)
    return replace(request, length=length)
