"""The worker's settings: one frozen object, read from the environment once at boot.

Every knob lives here or in :class:`comfy_bootstrap.config.ComfySettings` (read through the same
reader), so a misconfiguration is reported when the worker starts, listing every bad variable at
once, instead of surfacing as a strange error in the middle of a job. Modules receive a
:class:`Settings` instance; none of them reads ``os.environ`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from comfy_bootstrap.config import ComfySettings, ConfigError, EnvReader, parse_bool
from worker.delivery import AUTO, OUTPUT_MODES, PROVIDERS
from worker.tasks import REGISTRY, TASK_NAMES

__all__ = ["ConfigError", "Limits", "LoraSettings", "Settings"]


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one job may ask for. Minimums are ComfyUI's own and live in request.py."""

    max_width: int = 1280
    max_height: int = 1280
    max_length: int = 161
    max_steps: int = 60
    max_frame_rate: float = 60.0
    max_prompt_chars: int = 5000
    max_image_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_audio_bytes: int = 50 * 1024 * 1024
    #: Seconds of audio a job may use (after audio_start/audio_end).
    max_audio_seconds: float = 60.0
    max_video_bytes: int = 200 * 1024 * 1024
    #: Seconds of an input video a job may use (after <field>_start/<field>_end).
    max_video_seconds: float = 30.0
    #: Frames of an input video once resampled to the task's frame rate (30 s at 60 fps).
    max_video_frames: int = 1800
    #: Pixels of one frame of an input video: twice 1920×1080, so 1080p and 1440p (2560×1440) pass in
    #: either orientation and 4K (3840×2160, 8.3 M) does not. The size is kept, and ComfyUI loads every
    #: frame as 32-bit floats (12 bytes a pixel: 480 frames of 1080p are 12 GB of RAM); raise it where
    #: the memory is there.
    max_video_pixels: int = 2 * 1920 * 1080
    #: Seconds of video task s2v makes at most (its length follows the audio).
    max_s2v_seconds: float = 60.0
    #: Seconds of video task animate makes at most (its length follows the pose video).
    max_animate_seconds: float = 30.0
    image_url_timeout: float = 20.0
    #: Seconds a whole image download may take (every redirect, the headers and the body).
    image_url_deadline: float = 30.0
    allow_private_image_urls: bool = False
    max_loras: int = 4
    #: Frames in a video after interpolation ((161 − 1) × 4 + 1 by default).
    max_output_frames: int = 641


@dataclass(frozen=True)
class LoraSettings:
    """LoRAs a job gives by URL: how they are fetched, where they are cached, the tokens sent.

    Private addresses have their own switch (``ALLOW_PRIVATE_LORA_URLS``), apart from the image
    one: an operator who serves LoRAs from a bucket on the private network need not open
    ``image_url`` to it too. The tokens never appear in ``repr`` or the boot log.
    """

    max_bytes: int = 2 * 1024**3
    #: Seconds one connect or one read may wait.
    url_timeout: float = 30.0
    #: Seconds the whole download may take (redirects and body).
    url_deadline: float = 300.0
    allow_private_urls: bool = False
    #: None: ``<VOLUME_PATH>/lora-cache`` (``<WORKER_DIR>/lora-cache`` when that cannot be written).
    cache_dir: Path | None = None
    cache_bytes: int = 20 * 1024**3
    hf_token: str | None = field(default=None, repr=False)
    civitai_token: str | None = field(default=None, repr=False)


def _default_model_names() -> dict[str, str]:
    """Every task's model files by their environment variable, at their defaults."""
    return {spec.env: spec.default for task in REGISTRY.values() for spec in task.all_specs}


def _read_delivery(reader: EnvReader) -> dict[str, Any]:
    """Each output provider's own settings, by its name (worker/delivery/)."""
    return {name: spec.read_settings(reader) for name, spec in PROVIDERS.items()}


@dataclass(frozen=True)
class Settings:
    """Everything the worker is configured with. Build it with :meth:`from_env`."""

    comfy: ComfySettings = field(default_factory=ComfySettings)
    # --- Tasks and models -----------------------------------------------------------------------
    #: The tasks this deployment serves (``TASKS``); the others are refused per job.
    tasks: tuple[str, ...] = TASK_NAMES
    #: Model file names by environment variable (``MODEL_HIGH_NOISE`` → file), for every task.
    model_names: Mapping[str, str] = field(default_factory=_default_model_names)
    workflows_dir: Path = Path(__file__).resolve().parent.parent / "workflows"
    #: Compile each diffusion model with torch.compile (``TorchCompileModel`` in the graphs). A
    #: compiled model does not use ComfyUI's dynamic VRAM, and each new size compiles for minutes.
    torch_compile: bool = False
    # --- Jobs ---------------------------------------------------------------------------------
    limits: Limits = field(default_factory=Limits)
    loras: LoraSettings = field(default_factory=LoraSettings)
    #: Frame rate of the 14B tasks when a job gives none (they are trained at 16 fps; 24 is the
    #: original worker's default).
    default_frame_rate: float = 24.0
    job_timeout: float = 540.0
    progress_interval: float = 2.0
    keep_files: bool = False
    save_metadata: bool = False
    ws_reconnect_attempts: int = 5
    log_level: str = "INFO"
    # --- Output ------------------------------------------------------------------------------
    #: Default for jobs that give no ``output_mode``: a provider's name, or ``auto`` (the best available).
    output_mode: str = AUTO
    #: Each output provider's settings by its name (``base64``: the size guard; ``s3``: the bucket).
    delivery: Mapping[str, Any] = field(default_factory=lambda: _read_delivery(EnvReader({})))
    # --- Warm-up -----------------------------------------------------------------------------
    #: Run a tiny job of ``warmup_task`` at boot, so the first user job finds the models loaded
    #: (and compiled: ``TORCH_COMPILE`` turns it on unless ``WARMUP`` is given).
    warmup: bool = False
    warmup_task: str = "i2v"
    warmup_timeout: float = 600.0
    #: Read the warm-up task's model files in parallel while ComfyUI boots (worker/prefetch.py).
    prefetch_models: bool = False
    # --- Your own graphs ---------------------------------------------------------------------
    allow_custom_workflow: bool = False
    max_workflow_bytes: int = 1_000_000
    max_workflow_nodes: int = 500
    #: Node classes a job's own graph may use beside the default allow-list (``*``: every class).
    custom_workflow_nodes: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``); raise one ConfigError for all faults."""
        reader = EnvReader(os.environ if env is None else env)
        d, dl = cls(), Limits()
        comfy = ComfySettings.read(reader)
        tasks = reader.get("TASKS", _task_list, d.tasks)
        torch_compile = reader.get("TORCH_COMPILE", parse_bool, d.torch_compile)
        settings = cls(
            comfy=comfy,
            tasks=tasks,
            model_names={name: reader.get(name, str, default) for name, default in d.model_names.items()},
            workflows_dir=Path(reader.get("WORKFLOWS_DIR", str, str(d.workflows_dir))),
            torch_compile=torch_compile,
            limits=Limits(
                max_width=reader.get("MAX_WIDTH", int, dl.max_width, lo=16, hi=16384),
                max_height=reader.get("MAX_HEIGHT", int, dl.max_height, lo=16, hi=16384),
                max_length=reader.get("MAX_LENGTH", int, dl.max_length, lo=1, hi=16384),
                max_steps=reader.get("MAX_STEPS", int, dl.max_steps, lo=1, hi=10000),
                max_frame_rate=reader.get("MAX_FRAME_RATE", float, dl.max_frame_rate, lo=1),
                max_prompt_chars=reader.get("MAX_PROMPT_CHARS", int, dl.max_prompt_chars, lo=1),
                max_image_bytes=reader.get("MAX_IMAGE_BYTES", int, dl.max_image_bytes, lo=1),
                max_image_pixels=reader.get("MAX_IMAGE_PIXELS", int, dl.max_image_pixels, lo=1),
                max_audio_bytes=reader.get("MAX_AUDIO_BYTES", int, dl.max_audio_bytes, lo=1),
                max_audio_seconds=reader.get("MAX_AUDIO_SECONDS", float, dl.max_audio_seconds, lo=1, hi=3600),
                max_video_bytes=reader.get("MAX_VIDEO_BYTES", int, dl.max_video_bytes, lo=1),
                max_video_seconds=reader.get("MAX_VIDEO_SECONDS", float, dl.max_video_seconds, lo=1, hi=3600),
                max_video_frames=reader.get("MAX_VIDEO_FRAMES", int, dl.max_video_frames, lo=1, hi=1_000_000),
                max_video_pixels=reader.get("MAX_VIDEO_PIXELS", int, dl.max_video_pixels, lo=64 * 64, hi=16384 * 16384),
                max_s2v_seconds=reader.get("MAX_S2V_SECONDS", float, dl.max_s2v_seconds, lo=1, hi=3600),
                max_animate_seconds=reader.get("MAX_ANIMATE_SECONDS", float, dl.max_animate_seconds, lo=1, hi=3600),
                image_url_timeout=reader.get("IMAGE_URL_TIMEOUT", float, dl.image_url_timeout, lo=0.1),
                image_url_deadline=reader.get("IMAGE_URL_DEADLINE", float, dl.image_url_deadline, lo=1),
                allow_private_image_urls=reader.get("ALLOW_PRIVATE_IMAGE_URLS", parse_bool, dl.allow_private_image_urls),
                max_loras=reader.get("MAX_LORAS", int, dl.max_loras, lo=0, hi=32),
                max_output_frames=reader.get("MAX_OUTPUT_FRAMES", int, dl.max_output_frames, lo=1, hi=65536),
            ),
            loras=_loras_from_env(reader),
            default_frame_rate=reader.get("DEFAULT_FRAME_RATE", float, d.default_frame_rate, lo=1),
            job_timeout=reader.get("JOB_TIMEOUT", float, d.job_timeout, lo=1),
            progress_interval=reader.get("PROGRESS_INTERVAL", float, d.progress_interval, lo=0),
            keep_files=reader.get("KEEP_FILES", parse_bool, d.keep_files),
            save_metadata=reader.get("SAVE_METADATA", parse_bool, d.save_metadata),
            ws_reconnect_attempts=reader.get("WS_RECONNECT_ATTEMPTS", int, d.ws_reconnect_attempts, lo=0, hi=100),
            log_level=reader.get("LOG_LEVEL", str.upper, d.log_level, choices=("DEBUG", "INFO", "WARNING", "ERROR")),
            output_mode=reader.get("OUTPUT_MODE", str.lower, d.output_mode, choices=OUTPUT_MODES),
            delivery=_read_delivery(reader),
            warmup=reader.get("WARMUP", parse_bool, d.warmup or torch_compile),
            warmup_task=reader.get("WARMUP_TASK", str, d.warmup_task if d.warmup_task in tasks else tasks[0]),
            warmup_timeout=reader.get("WARMUP_TIMEOUT", float, d.warmup_timeout, lo=1),
            prefetch_models=reader.get("PREFETCH_MODELS", parse_bool, d.prefetch_models),
            allow_custom_workflow=reader.get("ALLOW_CUSTOM_WORKFLOW", parse_bool, d.allow_custom_workflow),
            max_workflow_bytes=reader.get("MAX_WORKFLOW_BYTES", int, d.max_workflow_bytes, lo=1000, hi=100_000_000),
            max_workflow_nodes=reader.get("MAX_WORKFLOW_NODES", int, d.max_workflow_nodes, lo=1, hi=100_000),
            custom_workflow_nodes=reader.get("CUSTOM_WORKFLOW_NODES", _class_list, d.custom_workflow_nodes),
        )
        _check_relations(settings, reader)
        reader.raise_if_errors()
        return settings

    def describe(self) -> dict[str, object]:
        """The settings as plain values for the boot log; keys and tokens are left out (repr=False)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def _task_list(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [name for name in names if name not in REGISTRY]
    if unknown or not names:
        raise ValueError(f"{'unknown task ' + ', '.join(unknown) if unknown else 'no task'}; the tasks are {', '.join(TASK_NAMES)}")
    return names


def _class_list(raw: str) -> frozenset[str]:
    """Node class names, comma-separated (class names may hold spaces: ``Note Plus (mtb)``)."""
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _check_relations(settings: Settings, reader: EnvReader) -> None:
    """Rules that involve several variables."""
    mode = settings.output_mode
    if mode in PROVIDERS and PROVIDERS[mode].unavailable(settings.delivery[mode]) is not None:
        reader.fail(f"OUTPUT_MODE={mode!r} needs {PROVIDERS[mode].setup}; or use OUTPUT_MODE=auto")
    if settings.loras.max_bytes > settings.loras.cache_bytes:
        reader.fail(
            f"LORA_MAX_BYTES={settings.loras.max_bytes} is larger than LORA_CACHE_BYTES={settings.loras.cache_bytes}: "
            "a LoRA that big could never stay in the cache"
        )
    if settings.warmup_task not in settings.tasks:
        reader.fail(f"WARMUP_TASK={settings.warmup_task!r}: not one of the served TASKS ({', '.join(settings.tasks)})")
    _check_limits(settings, reader)


def _check_limits(settings: Settings, reader: EnvReader) -> None:
    """Limits a job could never meet: sizes off the served tasks' step, a length not 4n+1, a task's
    default beyond its limit (every job relying on the default would fail)."""
    limits, served = settings.limits, [REGISTRY[name] for name in settings.tasks]
    step = max(task.size_step for task in served)
    coarse = [task.name for task in served if task.size_step == step]
    others = [task.name for task in served if task.size_step < step]
    for name, value in (("MAX_WIDTH", limits.max_width), ("MAX_HEIGHT", limits.max_height)):
        if value % step:
            reader.fail(
                f"{name}={str(value)!r}: not a multiple of {step}, the size step of the served tasks "
                f"(allowed: multiples of {step} from {step} to 16384)"
                + (f"; {', '.join(coarse)} needs multiples of {step}: to keep {value}, serve TASKS={','.join(others)}" if others else "")
            )
    if (limits.max_length - 1) % 4:
        reader.fail(f"MAX_LENGTH={str(limits.max_length)!r}: not 4n+1 frames (allowed: 1, 5, 9, …, 81, …, 161, …, 16381)")
    bounds = {"width": ("MAX_WIDTH", limits.max_width), "height": ("MAX_HEIGHT", limits.max_height),
              "length": ("MAX_LENGTH", limits.max_length), "steps": ("MAX_STEPS", limits.max_steps)}  # fmt: skip
    for option, (name, limit) in bounds.items():
        above = [f"{task.name} ({task.defaults[option]})" for task in served if task.defaults[option] > limit]
        if above:
            reader.fail(f"{name}={str(limit)!r}: below the default {option} of task {', '.join(above)}")
    if settings.default_frame_rate > limits.max_frame_rate:
        reader.fail(f"DEFAULT_FRAME_RATE={settings.default_frame_rate:g}: above MAX_FRAME_RATE={limits.max_frame_rate:g}")


def _loras_from_env(reader: EnvReader) -> LoraSettings:
    d = LoraSettings()
    cache_dir = reader.get("LORA_CACHE_DIR", str, None)
    return LoraSettings(
        max_bytes=reader.get("LORA_MAX_BYTES", int, d.max_bytes, lo=1),
        url_timeout=reader.get("LORA_URL_TIMEOUT", float, d.url_timeout, lo=0.1),
        url_deadline=reader.get("LORA_URL_DEADLINE", float, d.url_deadline, lo=1),
        allow_private_urls=reader.get("ALLOW_PRIVATE_LORA_URLS", parse_bool, d.allow_private_urls),
        cache_dir=Path(cache_dir) if cache_dir else None,
        cache_bytes=reader.get("LORA_CACHE_BYTES", int, d.cache_bytes, lo=1),
        hf_token=reader.get("HF_TOKEN", str.strip, None) or None,
        civitai_token=reader.get("CIVITAI_TOKEN", str.strip, None) or None,
    )
