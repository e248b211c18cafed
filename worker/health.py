"""Self-healing: after a failed job, decide whether this worker should ask RunPod to replace it.

RunPod replaces a worker when a job's answer carries ``refresh_worker: true``; the handler applies
the decision made here in one place, its error mapping. Three cases ask for a new worker:

1. **A GPU fault, confirmed**: ComfyUI's ``execution_error`` is a CUDA error of torch's — by its
   exception type (:data:`CUDA_ERROR_TYPES`, or the forms of torch's own ``RuntimeError``) — raised
   by a node whose work runs on the GPU (:data:`GPU_NODE_CLASSES`). A message alone never decides:
   any node can raise any text, and a job's own text can say "CUDA error". Such an error may have
   broken only ComfyUI's CUDA context ("sticky" errors) or the GPU itself, so ComfyUI is stopped
   and the device checked from a fresh process (:func:`comfy_bootstrap.gpu.check_device`): when it
   works, ComfyUI is restarted and the worker kept; when it does not, the worker is replaced.
2. **A persistent out-of-memory**: the same worker runs out of (GPU or host) memory on
   :data:`OOM_STREAK_LIMIT` jobs in a row, with no successful job in between. One OOM is usually a
   request too large for the card (the user's answer says to ask for fewer frames or a smaller
   size) and ComfyUI unloads its models after it, so the next job starts clean; OOM after OOM means
   leaked or fragmented memory, or a GPU shared with something else. The kernel's OOM killer
   ending ComfyUI (the host's RAM ran out: :attr:`ComfyUnavailable.host_oom`) counts the same.
3. **ComfyUI cannot be restarted**: :class:`comfy_bootstrap.errors.ComfyUnavailable` already
   carries ``refresh_worker=True`` after repeated failed restarts; that is passed through.

Everything else (bad input, a corrupt image, a cancelled or timed-out job, a crash ComfyUI was
restarted from) keeps the worker. A node that found no room to write (``OSError`` ENOSPC) is
:class:`StorageFull`, the disk's fault (:func:`as_storage_full`). The error names and texts, and
where each was seen, are in docs/troubleshooting.md ("How the worker tells a GPU fault").
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.errors import ComfyError, ExecutionFailed
from comfy_bootstrap.gpu import DeviceCheck, check_device
from worker.errors import StorageFull, WorkerError

log = logging.getLogger(__name__)

#: Consecutive out-of-memory jobs (no success in between) after which the worker is replaced.
OOM_STREAK_LIMIT = 2

#: torch 2.10's exceptions for a failed CUDA call, as ComfyUI names them (``module.QualName``):
#: every CUDA runtime error since torch 2.8, the CUDA runtime API wrapper's, a failed lazy init.
CUDA_ERROR_TYPES = frozenset({"torch.AcceleratorError", "torch.cuda.CudaError", "torch.cuda.DeferredCudaCallError"})
#: torch's own RuntimeError forms of a CUDA failure, at the start of the message: before torch 2.8
#: every CUDA error, and still cuBLAS, cuDNN, driver-API and initialisation failures.
TORCH_CUDA_RUNTIME_ERROR = re.compile(
    r"CUDA error: |CUDA driver error: |cuDNN error: |CUDA kernel launch failed|cuda runtime error \(|No CUDA GPUs are available"
    r"|Found no NVIDIA driver|Failed to initialize NVML|NVML_SUCCESS == DriverAPI"
)
#: Node classes whose work runs on the GPU: the stored graphs' (samplers, loaders, text encoder, VAE,
#: the Wan latent nodes, the audio encoder, CLIP vision, frame interpolation) and their core ComfyUI
#: counterparts a custom graph would use.
GPU_NODE_CLASSES = frozenset({
    "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced",
    "UNETLoader", "CLIPLoader", "VAELoader", "CheckpointLoaderSimple", "LoraLoader", "LoraLoaderModelOnly",
    "ModelSamplingSD3", "TorchCompileModel", "CLIPTextEncode", "CLIPVisionLoader", "CLIPVisionEncode",
    "AudioEncoderLoader", "AudioEncoderEncode",
    "VAEDecode", "VAEEncode", "VAEDecodeTiled", "VAEEncodeTiled",
    "WanImageToVideo", "WanFirstLastFrameToVideo", "Wan22ImageToVideoLatent", "EmptyHunyuanLatentVideo",
    "WanSoundImageToVideo", "WanSoundImageToVideoExtend", "WanAnimateToVideo", "Wan22FunControlToVideo",
    "FrameInterpolationModelLoader", "FrameInterpolate", "SDPoseKeypointExtractor", "SAM3_VideoTrack",
})  # fmt: skip
#: ``errno`` 28 (ENOSPC) and 122 (EDQUOT) as Python's OSError writes them.
_NO_ROOM = re.compile(r"\[Errno (28|122)\] ")


class FailureKind(StrEnum):
    """What a failed job says about the worker's GPU."""

    GPU_FAULT = "gpu_fault"
    OUT_OF_MEMORY = "out_of_memory"
    OTHER = "other"


@dataclass(frozen=True)
class Signature:
    """One kind of failure: ComfyUI's exception types it comes as, and the start of the message when
    the type alone does not tell (None: any message)."""

    name: str
    kind: FailureKind
    types: frozenset[str]
    message: re.Pattern[str] | None = None
    gpu_nodes_only: bool = False

    def matches(self, exception_type: str, message: str, node_type: str | None) -> bool:
        if exception_type not in self.types or (self.gpu_nodes_only and node_type not in GPU_NODE_CLASSES):
            return False
        return self.message is None or self.message.match(message) is not None


_OOM, _FAULT = FailureKind.OUT_OF_MEMORY, FailureKind.GPU_FAULT
_TORCH_OOM = frozenset({"torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError"})

#: Checked in order: an out-of-memory first ("CUDA error: out of memory" is one, not a fault).
SIGNATURES: tuple[Signature, ...] = (
    Signature("torch OutOfMemoryError", _OOM, _TORCH_OOM),
    Signature("CUDA out of memory", _OOM, CUDA_ERROR_TYPES | {"RuntimeError"}, re.compile(
        r"CUDA error: (out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUBLAS_STATUS_NOT_INITIALIZED)"
        r"|cuDNN error: CUDNN_STATUS_INTERNAL_ERROR|NVML_SUCCESS == r\b")),
    Signature("host memory", _OOM, frozenset({"RuntimeError"}), re.compile(r"\[enforce fail at alloc_cpu\.cpp|DefaultCPUAllocator: not enough memory")),
    Signature("Python MemoryError", _OOM, frozenset({"MemoryError"})),
    Signature("torch CUDA error type", _FAULT, CUDA_ERROR_TYPES, gpu_nodes_only=True),
    Signature("torch CUDA RuntimeError", _FAULT, frozenset({"RuntimeError"}), TORCH_CUDA_RUNTIME_ERROR, gpu_nodes_only=True),
)  # fmt: skip

HOST_OOM = Signature("host memory (OOM killer)", _OOM, frozenset())


def classify(exception_type: str, exception_message: str, node_type: str | None) -> tuple[FailureKind, Signature | None]:
    """What an ``execution_error`` means for the worker, and the signature that said so."""
    for signature in SIGNATURES:
        if signature.matches(exception_type or "", (exception_message or "").lstrip(), node_type):
            return signature.kind, signature
    return FailureKind.OTHER, None


def classify_error(exc: BaseException) -> tuple[FailureKind, Signature | None]:
    """A node's own exception (``ExecutionFailed``) says something about the GPU; ComfyUI killed by
    the kernel's OOM killer says the host's memory ran out."""
    if getattr(exc, "host_oom", False):
        return FailureKind.OUT_OF_MEMORY, HOST_OOM
    if not isinstance(exc, ExecutionFailed):
        return FailureKind.OTHER, None
    return classify(exc.exception_type, exc.exception_message or str(exc), exc.node_type)


def as_storage_full(exc: WorkerError | ComfyError) -> WorkerError | ComfyError:
    """A node's ``OSError`` ENOSPC (or EDQUOT) as :class:`StorageFull`: the disk's fault, not the job's."""
    if not (isinstance(exc, ExecutionFailed) and exc.exception_type == "OSError" and _NO_ROOM.match(exc.exception_message)):
        return exc
    return StorageFull(
        f"{exc} (ComfyUI writes the job's images, videos and temporary files in WORKER_DIR, on the container's "
        "disk: give the worker a larger disk, or ask for a shorter or smaller video)"
    )


#: Appended to the error string so the user knows what to do.
OOM_ADVICE = "try fewer frames (options.length) or a smaller size (options.width, options.height)"


class Restartable(Protocol):
    """What the policy needs of :class:`comfy_bootstrap.server.ComfyServer`."""

    settings: ComfySettings

    def stop(self) -> None: ...

    def restart(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one failed job."""

    kind: FailureKind
    refresh_worker: bool
    #: Appended to the job's error string ("" for none).
    note: str = ""
    #: Why the worker asks to be replaced, for the log ("" when it does not).
    reason: str = ""


class WorkerHealth:
    """Tracks failures across jobs; :meth:`after_failure` says whether to ask for a new worker.

    Owned by the handler (one per worker process) and called from its error mapping only.
    Thread-safe: jobs run in worker threads.
    """

    def __init__(
        self,
        oom_streak_limit: int = OOM_STREAK_LIMIT,
        *,
        on_runpod: bool = True,
        device_check: Callable[[str], DeviceCheck] = check_device,
    ):
        """``on_runpod``: whether a refresh really replaces this worker (else the notes say to restart it);
        ``device_check(python)``: whether the GPUs work, asked with ComfyUI's Python (tests replace it)."""
        self.oom_streak_limit = oom_streak_limit
        self._replaced = "RunPod replaces this worker" if on_runpod else "restart the worker (on RunPod it would be replaced)"
        self._device_check = device_check
        self._oom_streak = 0
        self._lock = threading.Lock()

    @property
    def oom_streak(self) -> int:
        """Consecutive out-of-memory jobs since the last success."""
        return self._oom_streak

    def after_success(self) -> None:
        """A job completed: the GPU works, so earlier out-of-memories were the requests' size."""
        with self._lock:
            self._oom_streak = 0

    def after_failure(self, exc: WorkerError | ComfyError | BaseException, server: Restartable | None = None) -> Verdict:
        """Record one failed job; the verdict says whether RunPod should replace this worker.

        A GPU fault stops ComfyUI (``server``), checks the device and restarts ComfyUI when it
        works. Failures that are neither a GPU fault nor an OOM (bad input, cancel, timeout, a crash
        ComfyUI was restarted from) leave the OOM streak as it is: they say nothing about GPU memory.
        """
        kind, signature = classify_error(exc)
        if kind is FailureKind.GPU_FAULT:
            return self._after_gpu_fault(exc, server)
        if kind is FailureKind.OUT_OF_MEMORY:
            return self._after_oom(signature is HOST_OOM)
        if getattr(exc, "refresh_worker", False):  # e.g. ComfyUnavailable after repeated failed restarts
            return Verdict(kind, True, reason=f"{getattr(exc, 'code', type(exc).__name__)}: the error asks for a new worker")
        return Verdict(kind, False)

    def _after_gpu_fault(self, exc: BaseException, server: Restartable | None) -> Verdict:
        where = f"{getattr(exc, 'exception_type', '')} in {getattr(exc, 'node_type', '')}"
        if server is not None:
            server.stop()  # its faulted CUDA context and its memory must not skew the check
        check = self._device_check(server.settings.comfy_python if server is not None else "python3")
        if not check.healthy:
            log.error("the GPU check after a CUDA error (%s) failed in %.1f s: %s", where, check.seconds, check.problem)
            return Verdict(
                FailureKind.GPU_FAULT, True,
                note=f"A GPU fault: the GPU check after the CUDA error failed ({check.problem}): {self._replaced}; resubmit the job.",
                reason=f"GPU fault ({where}), the device check failed: {check.problem}",
            )  # fmt: skip
        log.warning("the GPU checked healthy in %.1f s after a CUDA error (%s): restarting ComfyUI", check.seconds, where)
        restarted = self._restart(server, f"a CUDA error ({where}): a fresh CUDA context")
        return Verdict(
            FailureKind.GPU_FAULT, False,
            note=f"A CUDA error in ComfyUI; the GPU checked healthy in a fresh process ({check.seconds:.1f} s), so ComfyUI "
                 f"{restarted}: resubmit the job.",
        )  # fmt: skip

    @staticmethod
    def _restart(server: Restartable | None, reason: str) -> str:
        """Restart ComfyUI; what happened, for the note."""
        if server is None:
            return "keeps its context"
        try:
            server.restart(reason)
        except (ComfyError, OSError) as exc:  # the next job's liveness check tries again
            log.error("ComfyUI could not be restarted after the CUDA error: %s", exc)
            return "could not be restarted now (the next job tries again)"
        return "was restarted with a fresh CUDA context"

    def _after_oom(self, host: bool) -> Verdict:
        with self._lock:
            self._oom_streak += 1
            streak = self._oom_streak
            if streak >= self.oom_streak_limit:
                self._oom_streak = 0
        memory = "the host's memory" if host else "memory"
        if streak < self.oom_streak_limit:
            return Verdict(FailureKind.OUT_OF_MEMORY, False, note=f"Out of {memory}: {OOM_ADVICE}.")
        return Verdict(
            FailureKind.OUT_OF_MEMORY, True,
            note=f"The worker ran out of {memory} on {streak} jobs in a row: {self._replaced}. If the request is large, also {OOM_ADVICE}.",
            reason=f"out of {memory} on {streak} jobs in a row",
        )  # fmt: skip
