"""Self-healing: after a failed job, decide whether this worker should ask RunPod to replace it.

RunPod replaces a worker when a job's answer carries ``refresh_worker: true``; the handler applies
the decision made here in one place, its error mapping. Three cases ask for a new worker:

1. **A GPU fault**: ComfyUI's ``execution_error`` carries a CUDA error (an illegal memory access, a
   device-side assert, an ECC error, a lost device or driver, ...). After most of them the process's
   CUDA context is unusable ("sticky" errors) or the GPU itself is at fault, so every later job on
   this worker would fail too. The inputs of this worker's fixed workflow are validated before
   ComfyUI sees them, so a CUDA error is never the request's fault.
2. **A persistent out-of-memory**: the same worker runs out of (GPU or host) memory on
   :data:`OOM_STREAK_LIMIT` jobs in a row, with no successful job in between. One OOM is usually a
   request too large for the card (the user's answer says to ask for fewer frames or a smaller
   size) and ComfyUI unloads its models after it, so the next job starts clean; OOM after OOM means
   leaked or fragmented memory, or a GPU shared with something else. The kernel's OOM killer
   ending ComfyUI (the host's RAM ran out: :attr:`ComfyUnavailable.host_oom`) counts the same.
3. **ComfyUI cannot be restarted**: :class:`comfy_bootstrap.errors.ComfyUnavailable` already
   carries ``refresh_worker=True`` after repeated failed restarts; that is passed through.

Everything else (bad input, a corrupt image, a cancelled or timed-out job, a crash ComfyUI was
restarted from) keeps the worker: those are handled by the job's own error and ``ensure_alive``.

The patterns below were collected from the error texts of PyTorch, ComfyUI and NVIDIA's libraries as
users reported them; each rule names its sources (GitHub issue threads unless said otherwise).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from enum import StrEnum

from comfy_bootstrap.errors import ComfyError, ExecutionFailed
from worker.errors import WorkerError

log = logging.getLogger(__name__)

#: Consecutive out-of-memory jobs (no success in between) after which the worker is replaced.
OOM_STREAK_LIMIT = 2


class FailureKind(StrEnum):
    """What a failed job says about the worker's GPU."""

    GPU_FAULT = "gpu_fault"
    OUT_OF_MEMORY = "out_of_memory"
    OTHER = "other"


@dataclass(frozen=True)
class Rule:
    """One error signature: where it is looked for, what it means, and where it was seen."""

    name: str
    kind: FailureKind
    pattern: re.Pattern[str]
    on_type: bool = False  # match ComfyUI's exception_type instead of the message
    sources: str = ""

    def matches(self, exception_type: str, message: str) -> bool:
        return bool(self.pattern.search(exception_type if self.on_type else message))


def _rule(name: str, kind: FailureKind, pattern: str, sources: str, *, on_type: bool = False) -> Rule:
    return Rule(name, kind, re.compile(pattern, re.IGNORECASE), on_type, sources)


_OOM = FailureKind.OUT_OF_MEMORY
_FAULT = FailureKind.GPU_FAULT

#: Out-of-memory signatures, checked first ("CUDA error: out of memory" is an OOM, not a fault).
#: The ambiguous library errors that are usually a full GPU go here too: treating them as OOM
#: costs at most one more failed job before the streak replaces the worker.
# fmt: off
OOM_RULES: tuple[Rule, ...] = (
    _rule("torch OutOfMemoryError", _OOM, r"OutOfMemoryError$", on_type=True,
          sources="torch.OutOfMemoryError (pytorch/pytorch#121702), formerly torch.cuda.OutOfMemoryError; "
                  "Comfy-Org/ComfyUI#4852"),
    _rule("out of memory", _OOM, r"\bout of memory\b",
          sources="'CUDA out of memory. Tried to allocate ...' (caching allocator), 'CUDA error: out of memory' "
                  "(cudaErrorMemoryAllocation), 'Allocation on device 0 would exceed allowed memory. (out of "
                  "memory)' (Comfy-Org/ComfyUI#1108)"),
    _rule("allocation on device", _OOM, r"\bAllocation on device\b",
          sources="torch.OutOfMemoryError 'Allocation on device' with cudaMallocAsync: Comfy-Org/ComfyUI#4852, "
                  "#5511, #6073"),
    _rule("cudaErrorMemoryAllocation", _OOM, r"\bcudaErrorMemoryAllocation\b|\bCUDA_ERROR_OUT_OF_MEMORY\b",
          sources="CUDA runtime/driver API error names for a failed allocation"),
    _rule("cuBLAS allocation", _OOM, r"\bCUBLAS_STATUS_(ALLOC_FAILED|NOT_INITIALIZED)\b",
          sources="cublasCreate fails near the memory limit: QwenLM/Qwen#120, OpenBMB/VisCPM#3, "
                  "EleutherAI/lm-evaluation-harness#1689"),
    _rule("cuDNN internal error", _OOM, r"\bCUDNN_STATUS_INTERNAL_ERROR\b",
          sources="usually a full GPU: microsoft/Bringing-Old-Photos-Back-to-Life#66, pytorch/pytorch#5962"),
    _rule("NVML assert in the OOM report", _OOM, r"NVML_SUCCESS == r\b",
          sources="PyTorch's allocator asks NVML for per-process usage while reporting an OOM: "
                  "pytorch/pytorch#112377, fal-ai/fal#478"),
    _rule("host memory", _OOM, r"DefaultCPUAllocator: not enough memory",
          sources="host RAM (models offloaded to the CPU): Comfy-Org/ComfyUI#1108, #5185, #7481"),
)

#: GPU/CUDA faults: the CUDA context, the GPU or its driver is broken for this process or worker.
GPU_FAULT_RULES: tuple[Rule, ...] = (
    _rule("torch AcceleratorError", _FAULT, r"(AcceleratorError|CudaError)$", on_type=True,
          sources="torch.AcceleratorError (torch >= 2.8) is raised for every CUDA runtime error: "
                  "pytorch/pytorch#152023; Comfy-Org/ComfyUI#13142, #14756"),
    _rule("CUDA error", _FAULT, r"\bCUDA error\b",
          sources="C10_CUDA_CHECK's 'CUDA error: <reason>': illegal memory access (Comfy-Org/ComfyUI#5428), "
                  "illegal instruction (#792), device-side assert (#3453), CUBLAS_STATUS_EXECUTION_FAILED and "
                  "launch timed out (#6510), operation not supported (#6843), unspecified launch failure "
                  "(kijai/ComfyUI-WanVideoWrapper#974), uncorrectable ECC error (ostris/ai-toolkit#470, on RunPod)"),
    _rule("cudaError name", _FAULT, r"\bcudaError[A-Z]\w*|\bCUDA_ERROR_[A-Z_]+",
          sources="PyTorch's 'Search for `cudaErrorIllegalAddress`' hint (Comfy-Org/ComfyUI#14756, #13142); "
                  "driver API names such as CUDA_ERROR_ECC_UNCORRECTABLE (nagadit/DeepFaceLab_Linux#89)"),
    _rule("illegal memory access", _FAULT, r"illegal memory access",
          sources="also outside the 'CUDA error:' form, e.g. 'CUDA kernel launch failed: an illegal memory "
                  "access was encountered' (nunchux-ai/nunchaku#865), Triton's '[CUDA]' errors"),
    _rule("device-side assert", _FAULT, r"device-side assert", sources="Comfy-Org/ComfyUI#3453, #12262, #13142"),
    _rule("unspecified launch failure", _FAULT, r"unspecified launch failure",
          sources="kijai/ComfyUI-WanVideoWrapper#974, Acly/krita-ai-diffusion#930"),
    _rule("illegal instruction", _FAULT, r"illegal instruction was encountered", sources="Comfy-Org/ComfyUI#792"),
    _rule("misaligned address", _FAULT, r"\bmisaligned address\b", sources="cudaErrorMisalignedAddress"),
    _rule("ECC error", _FAULT, r"\bECC error", sources="vllm-project/vllm#5222, zai-org/ChatGLM3#681, ostris/ai-toolkit#470"),
    _rule("cuBLAS failure", _FAULT, r"\bCUBLAS_STATUS_(?!ALLOC_FAILED\b|NOT_INITIALIZED\b)[A-Z_]+",
          sources="CUBLAS_STATUS_EXECUTION_FAILED (Comfy-Org/ComfyUI#6510), CUBLAS_STATUS_INTERNAL_ERROR (#5552)"),
    _rule("cuDNN failure", _FAULT, r"\bCUDNN_STATUS_(EXECUTION_FAILED|MAPPING_ERROR)\b",
          sources="patientx/ComfyUI-Zluda#284"),
    _rule("no device", _FAULT, r"no CUDA-capable device|No CUDA GPUs are available|CUDA driver initialization failed"
                                r"|CUDA unknown error|Found no NVIDIA driver",
          sources="cudaErrorNoDevice (slczgwh/REDN#5), torch's lazy-init errors (xianlin7/SAMUS#39, "
                  "lllyasviel/Fooocus#1189: a GPU that dropped out)"),
    _rule("driver too old", _FAULT, r"CUDA driver version is insufficient",
          sources="cudaErrorInsufficientDriver: nagadomi/nunif#702, NVIDIA/nvidia-docker#400"),
    _rule("NVML", _FAULT, r"\bNVML\b|\bnvml[A-Z]\w*|GPU is lost",
          sources="'Failed to initialize NVML: Driver/library version mismatch'; nvmlInit_v2_ failing until a "
                  "reboot (pytorch/pytorch#112950, #130486); NVML_ERROR_GPU_IS_LOST"),
)

# fmt: on

RULES: tuple[Rule, ...] = OOM_RULES + GPU_FAULT_RULES


def classify(exception_type: str, exception_message: str) -> tuple[FailureKind, Rule | None]:
    """What an ``execution_error`` means for the worker, and the first rule that said so."""
    for rule in RULES:
        if rule.matches(exception_type or "", exception_message or ""):
            return rule.kind, rule
    return FailureKind.OTHER, None


HOST_OOM = Rule("host memory (OOM killer)", FailureKind.OUT_OF_MEMORY, re.compile("$^"),
                sources="the kernel's OOM killer ended ComfyUI (cgroup memory.events oom_kill)")  # fmt: skip


def classify_error(exc: BaseException) -> tuple[FailureKind, Rule | None]:
    """A node's own exception (``ExecutionFailed``) says something about the GPU; ComfyUI killed by
    the kernel's OOM killer says the host's memory ran out."""
    if getattr(exc, "host_oom", False):
        return FailureKind.OUT_OF_MEMORY, HOST_OOM
    if not isinstance(exc, ExecutionFailed):
        return FailureKind.OTHER, None
    message = exc.exception_message or str(exc)
    return classify(exc.exception_type, message)


#: Appended to the error string so the user knows what to do.
OOM_ADVICE = "try fewer frames (options.length) or a smaller size (options.width, options.height)"


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

    def __init__(self, oom_streak_limit: int = OOM_STREAK_LIMIT, *, on_runpod: bool = True):
        """``on_runpod``: whether a refresh really replaces this worker (else the notes say to restart it)."""
        self.oom_streak_limit = oom_streak_limit
        self._replaced = "RunPod replaces this worker" if on_runpod else "restart the worker (on RunPod it would be replaced)"
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

    def after_failure(self, exc: WorkerError | ComfyError | BaseException) -> Verdict:
        """Record one failed job; the verdict says whether RunPod should replace this worker.

        Failures that are neither a GPU fault nor an OOM (bad input, cancel, timeout, a crash
        ComfyUI was restarted from) leave the OOM streak as it is: they say nothing about GPU memory.
        """
        kind, rule = classify_error(exc)
        if kind is FailureKind.GPU_FAULT:
            return Verdict(
                kind, True,
                note=f"This is a GPU/CUDA fault the worker cannot recover from: {self._replaced}; resubmit the job.",
                reason=f"GPU fault ({rule.name if rule else kind.value})",
            )  # fmt: skip
        if kind is FailureKind.OUT_OF_MEMORY:
            with self._lock:
                self._oom_streak += 1
                streak = self._oom_streak
                if streak >= self.oom_streak_limit:
                    self._oom_streak = 0
            memory = "the host's memory" if rule is HOST_OOM else "memory"
            if streak < self.oom_streak_limit:
                return Verdict(kind, False, note=f"Out of {memory}: {OOM_ADVICE}.")
            return Verdict(
                kind, True,
                note=f"The worker ran out of {memory} on {streak} jobs in a row: {self._replaced}. "
                     f"If the request is large, also {OOM_ADVICE}.",
                reason=f"out of {memory} on {streak} jobs in a row",
            )  # fmt: skip
        if getattr(exc, "refresh_worker", False):  # e.g. ComfyUnavailable after repeated failed restarts
            return Verdict(kind, True, reason=f"{getattr(exc, 'code', type(exc).__name__)}: the error asks for a new worker")
        return Verdict(kind, False)
