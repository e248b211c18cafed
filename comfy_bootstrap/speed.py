"""The speed switches of ComfyUI's command line: the attention backend and ``--fast``, per GPU.

The decisions are pure functions of the settings, the GPUs ``nvidia-smi`` lists (gpu.py) and, for
SageAttention, what :func:`probe_sageattention` found in ComfyUI's own Python; the worker never
imports torch. Why each choice is made: docs/deployment.md ("Attention backend", "--fast").
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import FAST_FEATURES
from .gpu import GpuInfo

logger = logging.getLogger(__name__)

#: ComfyUI runs fp8 matrix multiplications on compute capability 8.9 (Ada) and newer
#: (``supports_fp8_compute`` in comfy/model_management.py): the GPUs with fp8 tensor cores.
FP8_MIN_CAPABILITY = (8, 9)

#: What ``COMFY_FAST`` features do and why ``auto`` leaves them out (shown in the boot log).
FAST_CAUTIONS = {
    "fp16_accumulation": "changes numerics: fp16 matrix products accumulate in fp16, and ComfyUI then "
    "prefers fp16 compute (quality risk)",
    "cublas_ops": "only acts on fp16 weights and needs the cublas_ops package, which the image does not "
    "install; without it ComfyUI ignores it",
    "autotune": "turns cudnn.benchmark on (the VAE's convolutions are benchmarked on the first job of "
    "each size) and ComfyUI then leaves its cudaMallocAsync allocator off",
}

#: SageAttention 2.2's dispatch (``sageattn`` in sageattention/core.py): the compiled modules each
#: GPU architecture runs. sm_86 runs Triton kernels compiled at first use; other GPUs are refused.
SAGE_MODULES: dict[tuple[int, int], tuple[str, ...]] = {
    (8, 0): ("_qattn_sm80", "_fused"),
    (8, 6): (),
    (8, 9): ("_qattn_sm89", "_fused"),
    (9, 0): ("_qattn_sm90", "_fused"),
    (12, 0): ("_qattn_sm89", "_fused"),
}

#: Seconds the check in ComfyUI's Python may take (it imports torch, Triton and SageAttention).
SAGE_PROBE_TIMEOUT = 120.0

#: Run by ComfyUI's Python: import SageAttention as ComfyUI will, and say where its compiled
#: modules are and which of them imported. One JSON line on stdout.
SAGE_PROBE_SCRIPT = """
import importlib.metadata, importlib.util, json
try:
    import sageattention
    from sageattention import core
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
names = ("_qattn_sm80", "_qattn_sm89", "_qattn_sm90", "_fused")
modules = {}
for name in names:
    try:
        spec = importlib.util.find_spec("sageattention." + name)
    except Exception:
        spec = None
    modules[name] = spec.origin if spec is not None else None
flags = {"_qattn_sm80": "SM80_ENABLED", "_qattn_sm89": "SM89_ENABLED", "_qattn_sm90": "SM90_ENABLED"}
loaded = {name: bool(getattr(core, flag, False)) for name, flag in flags.items()}
loaded["_fused"] = True
try:
    version = importlib.metadata.version("sageattention")
except importlib.metadata.PackageNotFoundError:
    version = getattr(sageattention, "__version__", "unknown")
print(json.dumps({"version": version, "modules": modules, "loaded": loaded}))
"""

#: A fat binary container (the ``.nv_fatbin`` section of a CUDA module): magic, version 1, and
#: a 16-byte header, little-endian.
_FATBIN_MAGIC = struct.pack("<IHH", 0xBA55ED50, 1, 16)
_FATBIN_ELF, _FATBIN_PTX = 2, 1


@dataclass(frozen=True)
class CudaArchs:
    """The GPU architectures one compiled CUDA module carries code for, as (major, minor)."""

    #: Machine code (SASS, cubin): runs on that architecture as it is.
    sass: frozenset[tuple[int, int]] = frozenset()
    #: PTX: the driver would compile it at first load.
    ptx: frozenset[tuple[int, int]] = frozenset()

    def runs_on(self, capability: tuple[int, int]) -> bool:
        """True when machine code for this GPU is there: same major version, minor at most the GPU's."""
        major, minor = capability
        return any(m == major and n <= minor for m, n in self.sass)


@dataclass(frozen=True)
class SageProbe:
    """What importing SageAttention in ComfyUI's Python found (:func:`probe_sageattention`)."""

    #: Why it cannot be used at all (not installed, the import failed, the check failed); None when it imports.
    error: str | None = None
    version: str | None = None
    #: Compiled module name → the architectures it carries code for (None: the module is not there).
    kernels: Mapping[str, CudaArchs | None] = field(default_factory=dict)
    #: Compiled module name → whether SageAttention imported it (sageattention.core's SM*_ENABLED).
    loaded: Mapping[str, bool] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the boot log."""
        if self.error:
            return f"SageAttention unusable: {self.error}"
        parts = []
        for name, archs in sorted(self.kernels.items()):
            if archs is None:
                parts.append(f"{name} absent")
            else:
                sms = " ".join(sm(cap) for cap in sorted(archs.sass)) or "no machine code"
                parts.append(f"{name} {sms}{'' if self.loaded.get(name, True) else ' (did not import)'}")
        return f"SageAttention {self.version}: {', '.join(parts)}"


@dataclass(frozen=True)
class AttentionChoice:
    """The attention flag for ComfyUI and why (``warning``: the request could not be honoured)."""

    name: str
    flags: tuple[str, ...]
    note: str
    warning: str | None = None


@dataclass(frozen=True)
class FastChoice:
    """The ``--fast`` features to pass (none: no flag) and why."""

    features: tuple[str, ...]
    note: str


def sm(capability: tuple[int, int]) -> str:
    return f"sm_{capability[0]}{capability[1]}"


def describe_gpus(gpus: Sequence[GpuInfo]) -> str:
    return ", ".join(f"{gpu.sm} ({gpu.name})" for gpu in gpus)


def choose_fast(setting: str, gpus: Sequence[GpuInfo] | None) -> FastChoice:
    """``--fast`` for ``COMFY_FAST``: ``auto`` adds only fp8 matrix multiplication, and only where
    every GPU has fp8 tensor cores; the features that change numerics or memory are opt-in."""
    if setting == "off":
        return FastChoice((), "--fast: none (COMFY_FAST=off)")
    if setting != "auto":
        features = tuple(setting.split(","))
        cautions = "; ".join(f"{name} {FAST_CAUTIONS[name]}" for name in features if name in FAST_CAUTIONS)
        return FastChoice(features, f"--fast {' '.join(features)} (COMFY_FAST={setting})" + (f"; {cautions}" if cautions else ""))
    if not gpus:
        return FastChoice((), "--fast: none (COMFY_FAST=auto, but no NVIDIA GPU is visible)")
    without = [gpu for gpu in gpus if gpu.compute_capability < FP8_MIN_CAPABILITY]
    if without:
        return FastChoice((), f"--fast: none (COMFY_FAST=auto: {describe_gpus(without)} has no fp8 tensor cores)")
    return FastChoice(
        ("fp8_matrix_mult",),
        f"--fast fp8_matrix_mult (COMFY_FAST=auto: {describe_gpus(gpus)} has fp8 tensor cores; "
        "fp16_accumulation, cublas_ops and autotune are opt-in)",
    )


def sage_problem(probe: SageProbe | None, gpus: Sequence[GpuInfo] | None) -> str | None:
    """Why SageAttention cannot run on these GPUs, or None when its kernels are there for each."""
    if not gpus:
        seen = "nvidia-smi is not installed or failed" if gpus is None else "nvidia-smi lists no GPU"
        return f"no NVIDIA GPU is visible ({seen})"
    for gpu in gpus:
        if gpu.compute_capability not in SAGE_MODULES:
            supported = ", ".join(sm(cap) for cap in SAGE_MODULES)
            return f"SageAttention 2.2 has no kernels for {gpu.sm} ({gpu.name}); it runs on {supported}"
    if probe is None:
        return "SageAttention was not checked"
    if probe.error:
        return f"ComfyUI's Python cannot import SageAttention: {probe.error}"
    for gpu in gpus:
        for module in SAGE_MODULES[gpu.compute_capability]:
            archs = probe.kernels.get(module)
            if archs is None:
                return f"SageAttention {probe.version} has no compiled module {module}, which {gpu.sm} ({gpu.name}) runs"
            if not probe.loaded.get(module, True):
                return f"SageAttention {probe.version}'s module {module}, which {gpu.sm} ({gpu.name}) runs, did not import"
            if not archs.runs_on(gpu.compute_capability):
                built = " ".join(sm(cap) for cap in sorted(archs.sass)) or "no architecture"
                ptx = f" (PTX for {' '.join(sm(cap) for cap in sorted(archs.ptx))})" if archs.ptx else ""
                return (
                    f"SageAttention {probe.version}'s {module} holds machine code for {built}{ptx}, not for "
                    f"{gpu.sm} ({gpu.name}): rebuild it with TORCH_CUDA_ARCH_LIST including "
                    f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
                )
    return None


def choose_attention(
    requested: str,
    flags: Mapping[str, str],
    *,
    user_flags: Sequence[str] = (),
    gpus: Sequence[GpuInfo] | None = None,
    sage: SageProbe | None = None,
) -> AttentionChoice:
    """The attention flag: the user's own from ``COMFY_EXTRA_ARGS`` wins (ComfyUI takes only one);
    ``sage`` only where :func:`sage_problem` finds nothing, else PyTorch's with a warning."""
    if user_flags:
        names = {flag: name for name, flag in flags.items() if flag}
        flag = user_flags[0]
        name = names.get(flag, flag.removeprefix("--use-").removesuffix("-attention").removesuffix("-cross"))
        return AttentionChoice(
            name, (),
            f"attention: {' '.join(user_flags)} from COMFY_EXTRA_ARGS (COMFY_ATTENTION={requested} not passed: "
            "ComfyUI accepts only one attention flag)",
        )  # fmt: skip
    if requested == "sage":
        problem = sage_problem(sage, gpus)
        if problem is not None:
            fallback = flags["pytorch"]
            return AttentionChoice(
                "pytorch", (fallback,),
                f"attention: pytorch ({fallback}), instead of sage: {problem}",
                f"COMFY_ATTENTION=sage: {problem}; ComfyUI is launched with PyTorch attention ({fallback}) "
                "instead. SageAttention is in the image built with INSTALL_SAGEATTENTION=1 (make build-sage)",
            )  # fmt: skip
        version = sage.version if sage is not None else "?"
        return AttentionChoice(
            "sage", (flags["sage"],),
            f"attention: sage ({flags['sage']}): SageAttention {version} has kernels for {describe_gpus(gpus or [])}",
        )  # fmt: skip
    flag = flags.get(requested, "")
    if flag:
        return AttentionChoice(requested, (flag,), f"attention: {requested} ({flag})")
    return AttentionChoice(requested, (), f"attention: {requested} (ComfyUI's own choice, no flag)")


def fast_in_args(args: Sequence[str]) -> tuple[str, ...] | None:
    """The features a ``--fast`` in ``args`` enables (the last one wins, as in argparse); None without one."""
    found: tuple[str, ...] | None = None
    for index, arg in enumerate(args):
        if arg == "--fast":
            names = []
            for follower in args[index + 1 :]:
                if follower.startswith("-"):
                    break
                names.append(follower)
            found = tuple(names) if names else FAST_FEATURES
        elif arg.startswith("--fast="):
            found = (arg.partition("=")[2],)
    return found


def read_fatbin_archs(path: Path) -> CudaArchs:
    """The architectures in a compiled CUDA module's fat binaries (what ``cuobjdump --list-elf``
    lists), read from the file: every container header, then each entry's kind and SM number."""
    sass: set[tuple[int, int]] = set()
    ptx: set[tuple[int, int]] = set()
    with open(path, "rb") as stream:
        try:
            data = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return CudaArchs()
        with data:
            start = data.find(_FATBIN_MAGIC)
            while start != -1 and start + 16 <= len(data):
                (size,) = struct.unpack_from("<Q", data, start + 8)
                end = min(start + 16 + size, len(data))
                entry = start + 16
                while entry + 32 <= end:
                    kind, _, header, payload = struct.unpack_from("<HHIQ", data, entry)
                    (arch,) = struct.unpack_from("<I", data, entry + 28)
                    if header < 32:
                        break
                    if kind in (_FATBIN_ELF, _FATBIN_PTX) and 10 <= arch < 1000:
                        (sass if kind == _FATBIN_ELF else ptx).add(divmod(arch, 10))
                    entry += header + payload
                start = data.find(_FATBIN_MAGIC, max(end, start + 1))
    return CudaArchs(frozenset(sass), frozenset(ptx))


def parse_probe_output(stdout: str, seconds: float = 0.0) -> SageProbe:
    """The probe's JSON line (the last line that is one), with each compiled module's architectures."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        return SageProbe(error=f"the check printed no result ({stdout.strip()[-200:] or 'nothing'})", seconds=seconds)
    try:
        report = json.loads(lines[-1])
    except ValueError as exc:
        return SageProbe(error=f"the check printed {lines[-1][:200]!r}: {exc}", seconds=seconds)
    if report.get("error"):
        return SageProbe(error=str(report["error"]), seconds=seconds)
    kernels: dict[str, CudaArchs | None] = {}
    for name, origin in (report.get("modules") or {}).items():
        if not origin:
            kernels[name] = None
            continue
        try:
            kernels[name] = read_fatbin_archs(Path(origin))
        except (OSError, struct.error) as exc:
            logger.warning("cannot read the CUDA architectures of %s: %s", origin, exc)
            kernels[name] = CudaArchs()
    loaded = {str(name): bool(value) for name, value in (report.get("loaded") or {}).items()}
    return SageProbe(version=str(report.get("version")), kernels=kernels, loaded=loaded, seconds=seconds)


def probe_sageattention(python: str, timeout: float = SAGE_PROBE_TIMEOUT) -> SageProbe:
    """Import SageAttention in ``python`` (ComfyUI's) in a subprocess, then read its modules' architectures."""
    started = time.monotonic()
    try:
        done = subprocess.run([python, "-c", SAGE_PROBE_SCRIPT], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return SageProbe(error=f"importing it took more than {timeout:g} s", seconds=time.monotonic() - started)
    except OSError as exc:
        return SageProbe(error=f"cannot run {python}: {exc}", seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        return SageProbe(error=f"{python} exited with {done.returncode}: {last[-1] if last else ''}", seconds=seconds)
    return parse_probe_output(done.stdout, seconds)
