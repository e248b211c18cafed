"""How ComfyUI is run: one frozen settings object, read from the environment once at boot.

Only what concerns ComfyUI lives here (where it is, how it is launched, where its folders and
the model volume are). The worker's own settings (limits, output, tasks) are in
``worker/settings.py``, which reads these through the same :class:`EnvReader`, so a bad boot
names every bad variable at once.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Attention backends ComfyUI v0.30.0 can be told to use, mapped to its flag ("" = no flag).
ATTENTION_FLAGS: dict[str, str] = {
    "pytorch": "--use-pytorch-cross-attention",
    "sage": "--use-sage-attention",
    "flash": "--use-flash-attention",
    "xformers": "",
    "split": "--use-split-cross-attention",
}

PINNED_MEMORY_MODES = ("auto", "on", "off")

#: ComfyUI v0.30.0's ``--fast`` features (``PerformanceFeature`` in comfy/cli_args.py); COMFY_FAST
#: takes ``off``, ``auto`` or a comma list of them (comfy_bootstrap/speed.py decides ``auto``).
FAST_FEATURES = ("fp16_accumulation", "fp8_matrix_mult", "cublas_ops", "autotune")

#: A Hugging Face repository as MODEL_REPO names it: ``org/name`` or ``org/name@revision``.
REPO_PATTERN = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


class ConfigError(ValueError):
    """The environment holds values the worker cannot run with; the message lists all of them."""


@dataclass(frozen=True)
class ComfySettings:
    """Where ComfyUI is and how to start it, or the URL of one to attach to (``COMFY_URL``)."""

    comfy_dir: Path = Path("/comfyui")
    comfy_python: str = sys.executable
    host: str = "127.0.0.1"
    port: int = 8188
    #: When set, the worker attaches to this already running ComfyUI instead of launching one.
    url: str | None = None
    extra_args: tuple[str, ...] = ()
    attention: str = "pytorch"
    #: ``off``, ``auto`` (from the GPU's compute capability) or a comma list of FAST_FEATURES.
    fast: str = "off"
    pinned_memory: str = "auto"
    work_dir: Path = Path("/tmp/wan22-worker")
    boot_timeout: float = 300.0
    http_timeout: float = 10.0
    #: The network volume whose ``models/<folder>`` ComfyUI searches (extra_model_paths.yaml).
    volume_path: Path = Path("/runpod-volume")
    #: The one repository of the volume's Hugging Face cache to take model files from (``MODEL_REPO``,
    #: ``org/name[@revision]``); None: any repository there.
    model_repo: str | None = None
    #: More folders ComfyUI searches, as (ComfyUI folder, absolute path): set by the worker, not read
    #: from the environment (e.g. its cache of LoRAs fetched by URL).
    extra_model_dirs: tuple[tuple[str, Path], ...] = ()

    @property
    def attached(self) -> bool:
        """True when the worker uses a ComfyUI it did not start (``COMFY_URL``)."""
        return self.url is not None

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        return f"http://{self.host}:{self.port}"

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
    def temp_files_dir(self) -> Path:
        """Where ComfyUI writes temporary files: a ``temp`` folder inside ``--temp-directory``."""
        return self.temp_dir / "temp"

    @property
    def user_dir(self) -> Path:
        return self.work_dir / "user"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "comfyui.log"

    @property
    def extra_model_paths_file(self) -> Path:
        return self.work_dir / "extra_model_paths.yaml"

    @property
    def hf_cache_dir(self) -> Path:
        """Where RunPod puts an endpoint's cached model: a Hugging Face cache on the volume's path."""
        return self.volume_path / "huggingface-cache" / "hub"

    @property
    def model_links_dir(self) -> Path:
        """The worker's folder of links to model files found elsewhere (the Hugging Face cache)."""
        return self.work_dir / "model-links"

    @classmethod
    def read(cls, reader: EnvReader) -> ComfySettings:
        d = cls()
        return cls(
            comfy_dir=Path(reader.get("COMFY_DIR", str, str(d.comfy_dir))),
            comfy_python=reader.get("COMFY_PYTHON", str, d.comfy_python),
            host=reader.get("COMFY_HOST", str, d.host),
            port=reader.get("COMFY_PORT", int, d.port, lo=1, hi=65535),
            url=reader.get("COMFY_URL", parse_url, None),
            extra_args=tuple(reader.get("COMFY_EXTRA_ARGS", shlex.split, [])),
            attention=reader.get("COMFY_ATTENTION", str, d.attention, choices=tuple(ATTENTION_FLAGS)),
            fast=reader.get("COMFY_FAST", parse_fast, d.fast),
            pinned_memory=reader.get("COMFY_PINNED_MEMORY", str, d.pinned_memory, choices=PINNED_MEMORY_MODES),
            work_dir=Path(reader.get("WORKER_DIR", str, str(d.work_dir))),
            boot_timeout=reader.get("COMFY_BOOT_TIMEOUT", float, d.boot_timeout, lo=1),
            http_timeout=reader.get("COMFY_HTTP_TIMEOUT", float, d.http_timeout, lo=0.1),
            volume_path=Path(reader.get("VOLUME_PATH", str, str(d.volume_path))),
            model_repo=reader.get("MODEL_REPO", parse_repo, d.model_repo),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ComfySettings:
        reader = EnvReader(env)
        settings = cls.read(reader)
        reader.raise_if_errors()
        return settings


def parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def parse_fast(raw: str) -> str:
    """``COMFY_FAST``: ``off``, ``auto`` or a comma list of :data:`FAST_FEATURES`, in canonical form."""
    value = raw.strip().lower()
    if value in ("off", "auto"):
        return value
    names = list(dict.fromkeys(part.strip() for part in value.split(",")))
    unknown = [name for name in names if name not in FAST_FEATURES]
    if unknown:
        raise ValueError(
            f"unknown feature{'s' if len(unknown) > 1 else ''} {', '.join(repr(name) for name in unknown)}; allowed: off, auto, or a "
            f"comma-separated list of {', '.join(FAST_FEATURES)}"
        )
    return ",".join(names)


def parse_repo(raw: str) -> str:
    value = raw.strip()
    if not REPO_PATTERN.match(value):
        raise ValueError("expected a Hugging Face repository as org/name or org/name@revision")
    return value


def parse_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw


class EnvReader:
    """Parses variables one by one and collects every error, so a bad boot names them all."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
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
        raw = self.env.get(name)
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
        """Record a fault found after parsing (one involving several variables, or a derived rule)."""
        self._errors.append(message)

    def raise_if_errors(self) -> None:
        if self._errors:
            raise ConfigError("invalid configuration: " + "; ".join(self._errors))
