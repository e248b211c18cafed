"""Choose ComfyUI's command line: pure functions, so every choice is testable and printed at boot.

The inputs are the :class:`~comfy_bootstrap.config.ComfySettings`, a :class:`MemoryInfo`
snapshot of the container's memory and, when a setting needs them (:func:`needs_gpus`,
:func:`needs_sage_probe`), the GPUs and a SageAttention check (comfy_bootstrap/speed.py). Why each
flag is chosen is explained in docs/deployment.md ("ComfyUI's launch arguments").
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import ATTENTION_FLAGS, ComfySettings
from .gpu import GpuInfo
from .speed import SAGE_MODULES, SageProbe, choose_attention, choose_fast, fast_in_args

logger = logging.getLogger(__name__)

GIB = 1024**3

#: A cgroup limit at or above this is "no limit": cgroup v1 writes 9223372036854771712
#: (PAGE_COUNTER_MAX pages) when unlimited, and no real machine has 1 EiB of RAM.
UNLIMITED_THRESHOLD = 1 << 60

#: Flags a user may pass in COMFY_EXTRA_ARGS that make large video models slower; kept, but warned
#: about (each of the first five turns ComfyUI's dynamic VRAM off).
HARMFUL_FLAGS: dict[str, str] = {
    "--highvram": "turns dynamic VRAM off; on 24-48 GB cards large models then cannot swap "
    "in and out efficiently and jobs get much slower or run out of VRAM",
    "--gpu-only": "turns dynamic VRAM off and forces the text encoder and VAE into VRAM too; "
    "large models then run out of VRAM on most cards",
    "--novram": "turns dynamic VRAM off and streams every weight from RAM at every step (very slow)",
    "--cpu": "turns the GPU off entirely: a video model on the CPU takes hours per job",
    "--disable-dynamic-vram": "turns dynamic VRAM off: weights are loaded by estimate instead of on "
    "demand, usually slower and more prone to VRAM exhaustion",
    "--disable-smart-memory": "unloads every model after every prompt, so each job re-reads all its "
    "weights",
    "--cache-none": "disables ComfyUI's node cache, so the model loaders and the text encoder re-run "
    "for every job",
}

#: Flags the worker sets itself; passing them again in COMFY_EXTRA_ARGS overrides the worker's value
#: (argparse keeps the last one), which breaks its readiness checks or its file handling.
MANAGED_FLAGS = (
    "--listen",
    "--port",
    "--input-directory",
    "--output-directory",
    "--temp-directory",
    "--user-directory",
    "--base-directory",
    "--database-url",
)

#: ComfyUI puts its attention flags in one argparse mutually exclusive group: passing two makes it
#: exit at boot with "not allowed with argument". (xformers has no flag; --use-quad-cross-attention
#: and --use-ck-attention belong to the same group.)
ATTENTION_GROUP = frozenset(
    [flag for flag in ATTENTION_FLAGS.values() if flag]
    + ["--use-quad-cross-attention", "--use-ck-attention"]
)


@dataclass(frozen=True)
class MemoryInfo:
    """What the worker knows about memory when it launches ComfyUI.

    ``host_ram``: ``MemTotal`` of ``/proc/meminfo`` in bytes — what psutil (and thus ComfyUI
    v0.30.0) believes the machine has, even inside a container. ``cgroup_limit``: the container's
    memory limit in bytes, ``None`` when there is none. ``None`` for ``host_ram`` means unreadable.
    """

    host_ram: int | None
    cgroup_limit: int | None
    cgroup_source: str | None = None

    @property
    def limited(self) -> bool:
        """True when a cgroup limit is set and is below the host's RAM (it binds)."""
        return (
            self.cgroup_limit is not None
            and self.host_ram is not None
            and self.cgroup_limit < self.host_ram
        )


@dataclass(frozen=True)
class LaunchPlan:
    """The command line to start ComfyUI with, and one short note per choice (for the boot log)."""

    command: list[str]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pinned_memory: bool = True
    #: The attention backend ComfyUI was told to use (``pytorch`` also when ``sage`` was asked for
    #: but cannot run here; a flag of COMFY_EXTRA_ARGS by its name, e.g. ``quad``).
    attention: str = "pytorch"
    #: The ``--fast`` features on ComfyUI's command line (empty: no ``--fast``).
    fast: tuple[str, ...] = ()

    def report(self) -> dict[str, object]:
        """What a job can report about the launch (the answer's ``launch``): ``{"attention": ..., "fast": [...]}``."""
        return {"attention": self.attention, "fast": list(self.fast)}


def read_memory_info(
    cgroup_root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")
) -> MemoryInfo:
    """Read the container's memory limit (cgroup v2, else v1) and the host's RAM; never raises.

    cgroup v2 exposes ``memory.max`` ("max" = unlimited); v1 exposes
    ``memory/memory.limit_in_bytes`` (a huge number = unlimited). Unreadable files give ``None``.
    """
    limit: int | None = None
    source: str | None = None
    for candidate in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        raw = _read_text(candidate)
        if raw is None:
            continue
        source = str(candidate)
        value = raw.strip()
        if value == "max":
            limit = None
        else:
            try:
                limit = int(value)
            except ValueError:
                logger.warning("cannot parse the cgroup memory limit %r in %s", value, candidate)
                limit = None
            else:
                if limit <= 0 or limit >= UNLIMITED_THRESHOLD:
                    limit = None
        break
    return MemoryInfo(host_ram=_read_mem_total(meminfo), cgroup_limit=limit, cgroup_source=source)


def read_oom_kills(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How many processes the kernel's OOM killer has killed in this container (cgroup v2
    ``memory.events``, v1 ``memory.oom_control``); None when neither file says."""
    for candidate in (cgroup_root / "memory.events", cgroup_root / "memory" / "memory.oom_control"):
        for line in (_read_text(candidate) or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def needs_gpus(settings: ComfySettings) -> bool:
    """True when a launch setting depends on the GPU's compute capability (read before the launch)."""
    flags = _extra_flags(settings)
    return (settings.attention == "sage" and not flags & ATTENTION_GROUP) or (
        settings.fast == "auto" and "--fast" not in flags
    )


def needs_sage_probe(settings: ComfySettings, gpus: Sequence[GpuInfo] | None) -> bool:
    """True when ``COMFY_ATTENTION=sage`` is to be honoured and every GPU is one SageAttention serves:
    only then is it worth importing it in ComfyUI's Python."""
    if settings.attention != "sage" or _extra_flags(settings) & ATTENTION_GROUP:
        return False
    return bool(gpus) and all(gpu.compute_capability in SAGE_MODULES for gpu in gpus or [])


def plan_launch(
    settings: ComfySettings,
    *,
    memory: MemoryInfo,
    gpus: Sequence[GpuInfo] | None = None,
    sage: SageProbe | None = None,
) -> LaunchPlan:
    """Decide ComfyUI's command line and explain each choice; warnings are also logged.

    ``gpus`` (None: not read or no nvidia-smi) and ``sage`` matter only when :func:`needs_gpus` and
    :func:`needs_sage_probe` say so.
    """
    notes: list[str] = []
    warnings: list[str] = []
    extra = list(settings.extra_args)
    extra_flags = _extra_flags(settings)

    cmd = [settings.comfy_python, "main.py"]

    host = settings.host
    cmd += ["--listen", host, "--port", str(settings.port)]
    if _is_loopback(host):
        notes.append(f"listen on {host}:{settings.port}: loopback only, the worker is the only client")
    else:
        warnings.append(
            f"COMFY_HOST={host} is not a loopback address: ComfyUI's API (no authentication, can "
            "run any workflow and read any output) is reachable from the network"
        )
        notes.append(f"listen on {host}:{settings.port} (COMFY_HOST, not loopback)")

    cmd += ["--disable-auto-launch", "--preview-method", "none"]
    notes.append("no browser, no latent previews (nobody watches them; they cost time per step)")

    cmd += [
        "--input-directory", str(_abs(settings.input_dir)),
        "--output-directory", str(_abs(settings.output_dir)),
        "--temp-directory", str(_abs(settings.temp_dir)),
        "--user-directory", str(_abs(settings.user_dir)),
        # ComfyUI keeps its database under its own folder even with --user-directory; keep
        # everything it writes at run time in the worker's folder, so /comfyui can stay read-only.
        "--database-url", f"sqlite:///{_abs(settings.work_dir) / 'comfyui.db'}",
    ]  # fmt: skip
    notes.append(f"input/output/temp/user directories and the database under {_abs(settings.work_dir)}")

    cmd += ["--extra-model-paths-config", str(_abs(settings.extra_model_paths_file))]
    cached = " after the cached model's files linked in " + str(settings.model_links_dir) if _links(settings) else ""
    notes.append(f"models also searched on the volume {settings.volume_path}{cached} (extra_model_paths.yaml)")

    attention = choose_attention(
        settings.attention, ATTENTION_FLAGS, user_flags=sorted(extra_flags & ATTENTION_GROUP), gpus=gpus, sage=sage
    )
    cmd += attention.flags
    notes.append(attention.note)
    if attention.warning:
        warnings.append(attention.warning)

    user_fast = fast_in_args(extra)
    if user_fast is not None:
        fast = user_fast
        notes.append(f"--fast {' '.join(fast)} from COMFY_EXTRA_ARGS (COMFY_FAST={settings.fast} not passed)")
    else:
        choice = choose_fast(settings.fast, gpus)
        fast = choice.features
        if fast:
            cmd += ["--fast", *fast]
        notes.append(choice.note)

    pinned = _decide_pinned_memory(settings.pinned_memory, memory, notes, warnings)
    if not pinned and "--disable-pinned-memory" not in extra_flags:
        cmd.append("--disable-pinned-memory")

    for flag in sorted(extra_flags):
        if flag in HARMFUL_FLAGS:
            warnings.append(f"COMFY_EXTRA_ARGS contains {flag}: kept, but it {HARMFUL_FLAGS[flag]}")
        elif flag in MANAGED_FLAGS:
            warnings.append(
                f"COMFY_EXTRA_ARGS contains {flag}: it overrides the worker's own value, so the "
                "worker may not find ComfyUI or its files; prefer COMFY_HOST/COMFY_PORT/WORKER_DIR"
            )
    if extra:
        cmd += extra
        notes.append(f"extra arguments from COMFY_EXTRA_ARGS: {' '.join(extra)}")

    for message in warnings:
        logger.warning("%s", message)
    return LaunchPlan(
        command=cmd, notes=notes, warnings=warnings, pinned_memory=pinned, attention=attention.name, fast=tuple(fast)
    )


def build_command(settings: ComfySettings, *, memory: MemoryInfo) -> list[str]:
    """The command line alone (see :func:`plan_launch` for the notes explaining it)."""
    return plan_launch(settings, memory=memory).command


def _extra_flags(settings: ComfySettings) -> set[str]:
    return {arg.split("=", 1)[0] for arg in settings.extra_args if arg.startswith("--")}


def _decide_pinned_memory(mode: str, memory: MemoryInfo, notes: list[str], warnings: list[str]) -> bool:
    """True to leave ComfyUI's pinned memory on (the rule: docs/deployment.md, "ComfyUI's launch arguments")."""
    if mode == "on":
        notes.append("pinned memory: on (COMFY_PINNED_MEMORY=on)")
        if memory.limited:
            warnings.append(
                f"COMFY_PINNED_MEMORY=on inside a {_gib(memory.cgroup_limit)} memory limit on a "
                f"{_gib(memory.host_ram)} host: ComfyUI v0.30.0 sizes its pinned memory from the "
                "host's RAM and may be OOM-killed"
            )
        return True
    if mode == "off":
        notes.append("pinned memory: off (COMFY_PINNED_MEMORY=off)")
        return False
    # auto
    if memory.host_ram is None:
        notes.append("pinned memory: on (auto; host RAM unreadable, ComfyUI's default kept)")
        return True
    if memory.cgroup_limit is None:
        notes.append(f"pinned memory: on (auto; no container memory limit, host RAM {_gib(memory.host_ram)})")
        return True
    if memory.cgroup_limit < memory.host_ram:
        notes.append(
            f"pinned memory: off (auto; container limit {_gib(memory.cgroup_limit)} < host RAM "
            f"{_gib(memory.host_ram)}, which ComfyUI v0.30.0 sizes its pinned memory from)"
        )
        return False
    notes.append(
        f"pinned memory: on (auto; container limit {_gib(memory.cgroup_limit)} >= host RAM "
        f"{_gib(memory.host_ram)})"
    )
    return True


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _read_mem_total(meminfo: Path) -> int | None:
    text = _read_text(meminfo)
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            try:
                value = int(parts[1])
            except (IndexError, ValueError):
                return None
            unit = parts[2].lower() if len(parts) > 2 else "b"
            return value * 1024 if unit == "kb" else value
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _abs(path: Path) -> Path:
    """Absolute paths: ComfyUI wants --user-directory absolute, and its cwd is COMFY_DIR."""
    return path if path.is_absolute() else Path.cwd() / path


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GIB:.1f} GiB"


def _links(settings: ComfySettings) -> bool:
    """Whether the worker's extra model folders include its links to a cached model."""
    return any(path.parent == settings.model_links_dir for _, path in settings.extra_model_dirs)
