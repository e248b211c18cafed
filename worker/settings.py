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
from urllib.parse import urlsplit, urlunsplit

from comfy_bootstrap.config import ComfySettings, ConfigError, EnvReader, parse_bool, parse_url
from worker.tasks import REGISTRY, TASK_NAMES

__all__ = ["ConfigError", "Limits", "LoraSettings", "OUTPUT_MODES", "S3Settings", "Settings"]

OUTPUT_MODES = ("base64", "s3", "auto")


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


@dataclass(frozen=True)
class S3Settings:
    """Where outputs go in ``s3`` / ``auto`` output mode (AWS S3, Cloudflare R2, MinIO, ...).

    Names follow RunPod's convention (``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID``,
    ``BUCKET_SECRET_ACCESS_KEY``). The bucket is ``BUCKET_NAME`` or, as RunPod's own helpers do,
    the first path segment of the endpoint URL (``https://host/<bucket>``). The keys never
    appear in ``repr`` or the boot log.
    """

    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    bucket: str | None = None
    region: str | None = None
    prefix: str = "wan22"
    url_expiry: int = 3600

    @property
    def configured(self) -> bool:
        """True when a bucket is known and credentials are given (else ``auto`` means base64)."""
        return bool(self.bucket and self.access_key_id and self.secret_access_key)


def _default_model_names() -> dict[str, str]:
    """Every task's model files by their environment variable, at their defaults."""
    return {spec.env: spec.default for task in REGISTRY.values() for spec in task.all_specs}


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
    #: RunPod drops larger results silently; 10 MB (decimal, to be safe) fits /run and /runsync.
    max_response_bytes: int = 10_000_000
    keep_files: bool = False
    save_metadata: bool = False
    ws_reconnect_attempts: int = 5
    log_level: str = "INFO"
    # --- Output ------------------------------------------------------------------------------
    #: Default for jobs that give no ``output_mode``: base64 in the response, S3, or S3 when configured.
    output_mode: str = "auto"
    s3: S3Settings = field(default_factory=S3Settings)
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
            max_response_bytes=reader.get("MAX_RESPONSE_BYTES", int, d.max_response_bytes, lo=1024),
            keep_files=reader.get("KEEP_FILES", parse_bool, d.keep_files),
            save_metadata=reader.get("SAVE_METADATA", parse_bool, d.save_metadata),
            ws_reconnect_attempts=reader.get("WS_RECONNECT_ATTEMPTS", int, d.ws_reconnect_attempts, lo=0, hi=100),
            log_level=reader.get("LOG_LEVEL", str.upper, d.log_level, choices=("DEBUG", "INFO", "WARNING", "ERROR")),
            output_mode=reader.get("OUTPUT_MODE", str.lower, d.output_mode, choices=OUTPUT_MODES),
            s3=_s3_from_env(reader),
            warmup=reader.get("WARMUP", parse_bool, d.warmup or torch_compile),
            warmup_task=reader.get("WARMUP_TASK", str, d.warmup_task if d.warmup_task in tasks else tasks[0]),
            warmup_timeout=reader.get("WARMUP_TIMEOUT", float, d.warmup_timeout, lo=1),
            prefetch_models=reader.get("PREFETCH_MODELS", parse_bool, d.prefetch_models),
            allow_custom_workflow=reader.get("ALLOW_CUSTOM_WORKFLOW", parse_bool, d.allow_custom_workflow),
            max_workflow_bytes=reader.get("MAX_WORKFLOW_BYTES", int, d.max_workflow_bytes, lo=1000, hi=100_000_000),
        )
        _check_relations(settings, reader)
        reader.raise_if_errors()
        return settings

    def describe(self) -> dict[str, object]:
        """The settings as plain values for the boot log; S3 keys are left out (repr=False)."""
        return {f.name: repr(getattr(self, f.name)) if f.name == "s3" else str(getattr(self, f.name)) for f in fields(self)}


def _task_list(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [name for name in names if name not in REGISTRY]
    if unknown or not names:
        raise ValueError(f"{'unknown task ' + ', '.join(unknown) if unknown else 'no task'}; the tasks are {', '.join(TASK_NAMES)}")
    return names


def _check_relations(settings: Settings, reader: EnvReader) -> None:
    """Rules that involve several variables."""
    if settings.output_mode == "s3" and not settings.s3.configured:
        reader.fail(
            "OUTPUT_MODE='s3' needs S3 output configured: BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY and "
            "BUCKET_NAME (or the bucket as the path of BUCKET_ENDPOINT_URL); or use OUTPUT_MODE=auto"
        )
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
    for name, value in (("MAX_WIDTH", limits.max_width), ("MAX_HEIGHT", limits.max_height)):
        if value % step:
            reader.fail(
                f"{name}={str(value)!r}: not a multiple of {step}, the size step of the served tasks "
                f"(allowed: multiples of {step} from {step} to 16384)"
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


def _s3_from_env(reader: EnvReader) -> S3Settings:
    """S3 settings; the bucket comes from BUCKET_NAME or the endpoint URL's first path segment."""
    d = S3Settings()
    endpoint = reader.get("BUCKET_ENDPOINT_URL", parse_url, None)
    bucket = reader.get("BUCKET_NAME", str, None)
    if endpoint and not bucket:
        parsed = urlsplit(endpoint)
        segment = parsed.path.strip("/").split("/", 1)[0]
        if segment:
            bucket = segment
            endpoint = urlunsplit((parsed.scheme, parsed.netloc, "", "", ""))
    return S3Settings(
        endpoint_url=endpoint,
        access_key_id=reader.get("BUCKET_ACCESS_KEY_ID", str, None),
        secret_access_key=reader.get("BUCKET_SECRET_ACCESS_KEY", str, None),
        bucket=bucket,
        region=reader.get("BUCKET_REGION", str, None),
        prefix=reader.get("S3_PREFIX", str, d.prefix).strip("/"),
        url_expiry=reader.get("S3_URL_EXPIRY", int, d.url_expiry, lo=1, hi=604800),
    )
