"""One frozen settings object, read from the environment once at boot.

Every knob of the worker lives here, so a misconfiguration is reported when the worker starts,
listing every bad variable at once, instead of surfacing as a strange error in the middle of a
job. Modules receive a ``Settings`` instance; none of them reads ``os.environ`` itself.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

#: Attention backends ComfyUI v0.30.0 can be told to use, mapped to its flag. ComfyUI silently
#: picks xformers whenever the package imports, so the worker always passes one explicitly.
ATTENTION_FLAGS: dict[str, str] = {
    "pytorch": "--use-pytorch-cross-attention",
    "sage": "--use-sage-attention",
    "flash": "--use-flash-attention",
    "xformers": "",  # ComfyUI's own choice when xformers imports: no flag needed
    "split": "--use-split-cross-attention",
}

PINNED_MEMORY_MODES = ("auto", "on", "off")


class ConfigError(ValueError):
    """The environment holds values the worker cannot run with; the message lists all of them."""


@dataclass(frozen=True)
class ModelFiles:
    """The five model files the workflow loads, as ComfyUI names them (relative to their folder)."""

    high_noise: str = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
    low_noise: str = "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
    text_encoder: str = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    vae: str = "wan_2.1_vae.safetensors"
    lora: str = "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"


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
    allow_private_image_urls: bool = False


OUTPUT_MODES = ("base64", "s3", "auto")


@dataclass(frozen=True)
class S3Settings:
    """Where videos go in ``s3`` / ``auto`` output mode (AWS S3, Cloudflare R2, MinIO, ...).

    Names follow RunPod's convention (``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID``,
    ``BUCKET_SECRET_ACCESS_KEY``). The bucket is ``BUCKET_NAME`` or, as RunPod's own helpers do,
    the first path segment of the endpoint URL (``https://host/<bucket>``). The secret never
    appears in ``repr`` or the boot log.
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


@dataclass(frozen=True)
class Settings:
    """Everything the worker is configured with. Build it with :meth:`from_env`."""

    # --- ComfyUI process -------------------------------------------------------------------
    comfy_dir: Path = Path("/comfyui")
    comfy_python: str = sys.executable
    comfy_host: str = "127.0.0.1"
    comfy_port: int = 8188
    #: When set, the worker attaches to this already running ComfyUI instead of launching one.
    comfy_url: str | None = None
    comfy_extra_args: tuple[str, ...] = ()
    attention: str = "pytorch"
    pinned_memory: str = "auto"
    work_dir: Path = Path("/tmp/wan22-worker")
    boot_timeout: float = 900.0
    http_timeout: float = 10.0
    # --- Models ------------------------------------------------------------------------------
    volume_path: Path = Path("/runpod-volume")
    models: ModelFiles = field(default_factory=ModelFiles)
    # --- Jobs ---------------------------------------------------------------------------------
    workflow_path: Path = Path(__file__).resolve().parent.parent / "workflows" / "wan22_i2v_14b_lightx2v.json"
    limits: Limits = field(default_factory=Limits)
    job_timeout: float = 540.0
    progress_interval: float = 2.0
    #: RunPod drops larger results silently; 10 MB (decimal, to be safe) fits /run and /runsync.
    max_response_bytes: int = 10_000_000
    keep_files: bool = False
    save_metadata: bool = False
    ws_reconnect_attempts: int = 5
    log_level: str = "INFO"
    # --- Output ------------------------------------------------------------------------------
    #: Default for jobs that give no ``output_mode``: base64 in the response, S3, or S3 when
    #: configured or when the response would pass ``max_response_bytes``.
    output_mode: str = "auto"
    s3: S3Settings = field(default_factory=S3Settings)
    # --- Warm-up -----------------------------------------------------------------------------
    #: Run a tiny job through the real workflow at boot, so the first user job finds the models loaded.
    warmup: bool = False
    warmup_timeout: float = 600.0

    @property
    def attached(self) -> bool:
        """True when the worker uses a ComfyUI it did not start (``COMFY_URL``)."""
        return self.comfy_url is not None

    @property
    def base_url(self) -> str:
        if self.comfy_url:
            return self.comfy_url.rstrip("/")
        return f"http://{self.comfy_host}:{self.comfy_port}"

    @property
    def input_dir(self) -> Path:
        return self.work_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.work_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.work_dir / "temp"

    @property
    def user_dir(self) -> Path:
        return self.work_dir / "user"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "comfyui.log"

    @property
    def extra_model_paths_file(self) -> Path:
        return self.work_dir / "extra_model_paths.yaml"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``); raise one ConfigError for all faults."""
        reader = _EnvReader(os.environ if env is None else env)
        d = cls()
        dm, dl = ModelFiles(), Limits()
        settings = cls(
            comfy_dir=Path(reader.get("COMFY_DIR", str, str(d.comfy_dir))),
            comfy_python=reader.get("COMFY_PYTHON", str, d.comfy_python),
            comfy_host=reader.get("COMFY_HOST", str, d.comfy_host),
            comfy_port=reader.get("COMFY_PORT", int, d.comfy_port, lo=1, hi=65535),
            comfy_url=reader.get("COMFY_URL", _url, None),
            comfy_extra_args=tuple(reader.get("COMFY_EXTRA_ARGS", shlex.split, [])),
            attention=reader.get("COMFY_ATTENTION", str, d.attention, choices=tuple(ATTENTION_FLAGS)),
            pinned_memory=reader.get("COMFY_PINNED_MEMORY", str, d.pinned_memory, choices=PINNED_MEMORY_MODES),
            work_dir=Path(reader.get("WORKER_DIR", str, str(d.work_dir))),
            boot_timeout=reader.get("COMFY_BOOT_TIMEOUT", float, d.boot_timeout, lo=1),
            http_timeout=reader.get("COMFY_HTTP_TIMEOUT", float, d.http_timeout, lo=0.1),
            volume_path=Path(reader.get("VOLUME_PATH", str, str(d.volume_path))),
            models=ModelFiles(
                high_noise=reader.get("MODEL_HIGH_NOISE", str, dm.high_noise),
                low_noise=reader.get("MODEL_LOW_NOISE", str, dm.low_noise),
                text_encoder=reader.get("MODEL_TEXT_ENCODER", str, dm.text_encoder),
                vae=reader.get("MODEL_VAE", str, dm.vae),
                lora=reader.get("MODEL_LORA", str, dm.lora),
            ),
            workflow_path=Path(reader.get("WORKFLOW_PATH", str, str(d.workflow_path))),
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
                allow_private_image_urls=reader.get("ALLOW_PRIVATE_IMAGE_URLS", _bool, dl.allow_private_image_urls),
            ),
            job_timeout=reader.get("JOB_TIMEOUT", float, d.job_timeout, lo=1),
            progress_interval=reader.get("PROGRESS_INTERVAL", float, d.progress_interval, lo=0),
            max_response_bytes=reader.get("MAX_RESPONSE_BYTES", int, d.max_response_bytes, lo=1024),
            keep_files=reader.get("KEEP_FILES", _bool, d.keep_files),
            save_metadata=reader.get("SAVE_METADATA", _bool, d.save_metadata),
            ws_reconnect_attempts=reader.get("WS_RECONNECT_ATTEMPTS", int, d.ws_reconnect_attempts, lo=0, hi=100),
            log_level=reader.get("LOG_LEVEL", str.upper, d.log_level, choices=("DEBUG", "INFO", "WARNING", "ERROR")),
            output_mode=reader.get("OUTPUT_MODE", str.lower, d.output_mode, choices=OUTPUT_MODES),
            s3=_s3_from_env(reader),
            warmup=reader.get("WARMUP", _bool, d.warmup),
            warmup_timeout=reader.get("WARMUP_TIMEOUT", float, d.warmup_timeout, lo=1),
        )
        if settings.output_mode == "s3" and not settings.s3.configured:
            reader.fail(
                "OUTPUT_MODE='s3' needs S3 output configured: BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY and "
                "BUCKET_NAME (or the bucket as the path of BUCKET_ENDPOINT_URL); or use OUTPUT_MODE=auto"
            )
        reader.raise_if_errors()
        return settings

    def describe(self) -> dict[str, object]:
        """The settings as plain values, for the boot log line; S3 keys are left out (repr=False)."""
        return {f.name: repr(getattr(self, f.name)) if f.name == "s3" else str(getattr(self, f.name)) for f in fields(self)}


def _s3_from_env(reader: _EnvReader) -> S3Settings:
    """S3 settings; the bucket comes from BUCKET_NAME or the endpoint URL's first path segment."""
    d = S3Settings()
    endpoint = reader.get("BUCKET_ENDPOINT_URL", _url, None)
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


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw


class _EnvReader:
    """Parses variables one by one and collects every error, so a bad boot names them all."""

    def __init__(self, env: Mapping[str, str]):
        self._env = env
        self._errors: list[str] = []

    def get(
        self,
        name: str,
        parse: Callable[[str], T],
        default: T,
        *,
        lo: float | None = None,
        hi: float | None = None,
        choices: tuple[str, ...] | None = None,
    ) -> T:
        raw = self._env.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = parse(raw)
        except ValueError as exc:
            self._errors.append(f"{name}={raw!r}: {exc}")
            return default
        if choices is not None and value not in choices:
            self._errors.append(f"{name}={raw!r}: allowed values are {', '.join(choices)}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):  # type: ignore[operator]
            bounds = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            self._errors.append(f"{name}={raw!r}: must be within {bounds}")
            return default
        return value

    def fail(self, message: str) -> None:
        """Record a fault that involves several variables at once."""
        self._errors.append(message)

    def raise_if_errors(self) -> None:
        if self._errors:
            raise ConfigError("invalid configuration: " + "; ".join(self._errors))
