"""The self-healing policy: which ComfyUI errors ask RunPod for a new worker, and when.

The texts below are real ``exception_type`` / ``exception_message`` pairs as ComfyUI, PyTorch and
NVIDIA's libraries write them (sources in docs/troubleshooting.md); ComfyUI sends the whole
message, with PyTorch's hint lines, in ``execution_error``. A GPU fault is told by torch's CUDA
error types (or torch's own RuntimeError forms) from a node whose work runs on the GPU, never by
text alone, and is confirmed by a check of the device: :class:`FakeServer` and :class:`Checks`
stand in for ComfyUI and the check here; tests/test_handler.py runs them for real against the double.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from comfy_bootstrap.config import ComfySettings
from comfy_bootstrap.errors import ComfyBootError, ComfyUnavailable, ExecutionFailed, ExecutionInterrupted, ExecutionTimeout
from comfy_bootstrap.gpu import DeviceCheck
from tests.comfy_double.faults import DEFAULT_OOM_MESSAGE
from worker.errors import InvalidImage, InvalidInput, StorageFull
from worker.health import GPU_NODE_CLASSES, OOM_STREAK_LIMIT, FailureKind, WorkerHealth, as_storage_full, classify, classify_error

_HINTS = (
    "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.\n"
    "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
    "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n"
)

GPU_FAULTS = [
    ("torch.AcceleratorError", "CUDA error: an illegal memory access was encountered\n"
     "Search for `cudaErrorIllegalAddress' in https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html "
     "for more information.\n" + _HINTS),
    ("RuntimeError", "CUDA error: an illegal memory access was encountered\n" + _HINTS),
    ("torch.AcceleratorError", "CUDA error: device-side assert triggered\n"
     "Search for `cudaErrorAssert' in https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html for more information.\n" + _HINTS),
    ("RuntimeError", "CUDA error: an illegal instruction was encountered\n" + _HINTS),
    ("RuntimeError", "CUDA error: unspecified launch failure\n" + _HINTS),
    ("RuntimeError", "CUDA error: uncorrectable ECC error encountered\n" + _HINTS),
    ("RuntimeError", "CUDA error: misaligned address\n" + _HINTS),
    ("RuntimeError", "CUDA error: the launch timed out and was terminated\n" + _HINTS),
    ("RuntimeError", "CUDA error: all CUDA-capable devices are busy or unavailable\n" + _HINTS),
    ("RuntimeError", "CUDA error: no kernel image is available for execution on the device\n" + _HINTS),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasLtMatmul with transpose_mat1 1 "
     "transpose_mat2 0 m 320 n 8192 k 320 mat1_ld 320 mat2_ld 320 result_ld 320 abcType 2 computeType 68 scaleType 0`"),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_INTERNAL_ERROR when calling `cublasSgemm( handle, opa, opb, m, n, k, "
     "&alpha, a, lda, b, ldb, &beta, c, ldc)`"),
    ("RuntimeError", "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
    ("RuntimeError", "CUDA kernel launch failed: an illegal memory access was encountered"),
    ("RuntimeError", "cuda runtime error (100) : no CUDA-capable device is detected at /pytorch/aten/src/THC/THCGeneral.cpp:50"),
    ("RuntimeError", "No CUDA GPUs are available"),
    ("RuntimeError", "CUDA error: CUDA driver version is insufficient for CUDA runtime version"),
    ("RuntimeError", "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver"),
    ("RuntimeError", "NVML_SUCCESS == DriverAPI::get()->nvmlInit_v2_() INTERNAL ASSERT FAILED at "
     "\"../c10/cuda/CUDACachingAllocator.cpp\":1123, please report a bug to PyTorch."),
    ("RuntimeError", "Failed to initialize NVML: Driver/library version mismatch"),
    ("torch.AcceleratorError", "CUDA error: operation not supported\n" + _HINTS),
    ("torch.cuda.CudaError", "unspecified launch failure"),
    ("torch.cuda.DeferredCudaCallError", "CUDA call failed lazily at initialization with error: device >= 0 && device < num_gpus"),
]

OUT_OF_MEMORY = [
    ("torch.OutOfMemoryError", DEFAULT_OOM_MESSAGE + "\nThis error means you ran out of memory on your GPU.\n\n"
     "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."),
    ("torch.OutOfMemoryError", "Allocation on device \n"),
    ("torch.cuda.OutOfMemoryError", "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
     "Currently allocated     : 599.22 MiB\nRequested               : 25.00 MiB"),
    ("torch.AcceleratorError", "CUDA error: out of memory\n" + _HINTS),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ("RuntimeError", "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
    ("RuntimeError", "NVML_SUCCESS == r INTERNAL ASSERT FAILED at \"../c10/cuda/CUDACachingAllocator.cpp\":830, "
     "please report a bug to PyTorch. "),
    ("RuntimeError", "[enforce fail at alloc_cpu.cpp:115] data. DefaultCPUAllocator: not enough memory: "
     "you tried to allocate 3376447488 bytes."),
]

ORDINARY = [
    ("PIL.UnidentifiedImageError", "cannot identify image file '/comfyui/input/corrupt_input.png'\n"),
    ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied (77x768 and 4096x5120)"),
    ("RuntimeError", "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"),
    ("RuntimeError", "Given groups=1, weight of size [5120, 36, 1, 2, 2], expected input[1, 16, 21, 104, 60] to have "
     "36 channels, but got 16 channels instead"),
    ("AssertionError", "Torch not compiled with CUDA enabled"),
    ("FileNotFoundError", "[Errno 2] No such file or directory: '/comfyui/models/loras/x.safetensors'"),
    ("ValueError", "ffmpeg returned a non-zero exit status: Invalid argument"),
    ("safetensors_rust.SafetensorError", "Error while deserializing header: MetadataIncompleteBuffer"),
    ("KeyError", "'model.diffusion_model.blocks.0.cross_attn.k.weight'"),
]


#: A ValueError (or any type that is not torch's) with a CUDA text: what a node, or a job, can say.
FORGED = [
    ("ValueError", "CUDA error: an illegal memory access was encountered"),
    ("Exception", "CUDA error: device-side assert triggered\n" + _HINTS),
    ("RuntimeError", "the prompt said: CUDA error: an illegal memory access was encountered"),
    ("KeyError", "'torch.AcceleratorError'"),
]


def _failed(exception_type: str, exception_message: str, node_type: str = "KSamplerAdvanced") -> ExecutionFailed:
    first = exception_message.strip().splitlines()[0]
    return ExecutionFailed(
        f"node 14 ({node_type}) raised {exception_type}: {first}",
        exception_type=exception_type,
        exception_message=exception_message.strip(),
        node_type=node_type,
    )


@pytest.mark.parametrize(("exception_type", "message"), GPU_FAULTS)
def test_cuda_errors_of_torch_from_a_gpu_node_are_gpu_faults(exception_type: str, message: str) -> None:
    kind, signature = classify(exception_type, message, "KSamplerAdvanced")
    assert kind is FailureKind.GPU_FAULT and signature is not None, (exception_type, message)


@pytest.mark.parametrize(("exception_type", "message"), GPU_FAULTS)
def test_the_same_errors_from_a_node_that_does_not_use_the_gpu_are_not(exception_type: str, message: str) -> None:
    assert classify(exception_type, message, "LoadImage") == (FailureKind.OTHER, None)
    assert classify(exception_type, message, None) == (FailureKind.OTHER, None)


@pytest.mark.parametrize(("exception_type", "message"), FORGED)
def test_text_alone_never_makes_a_gpu_fault(exception_type: str, message: str) -> None:
    assert classify(exception_type, message, "KSamplerAdvanced")[0] is FailureKind.OTHER


@pytest.mark.parametrize(("exception_type", "message"), OUT_OF_MEMORY)
def test_out_of_memory_errors_are_oom(exception_type: str, message: str) -> None:
    assert classify(exception_type, message, "KSamplerAdvanced")[0] is FailureKind.OUT_OF_MEMORY, (exception_type, message)


def test_out_of_memory_needs_torchs_type_or_its_own_forms() -> None:
    assert classify("ValueError", "CUDA out of memory. Tried to allocate 1.52 GiB", "KSamplerAdvanced")[0] is FailureKind.OTHER
    assert classify("MemoryError", "", "VAEDecode")[0] is FailureKind.OUT_OF_MEMORY


@pytest.mark.parametrize(("exception_type", "message"), ORDINARY)
def test_ordinary_errors_are_not_gpu_trouble(exception_type: str, message: str) -> None:
    assert classify(exception_type, message, "KSamplerAdvanced") == (FailureKind.OTHER, None)


def test_the_stored_graphs_gpu_nodes_are_in_the_table() -> None:
    assert {"KSampler", "KSamplerAdvanced", "UNETLoader", "CLIPLoader", "VAELoader", "CLIPTextEncode", "VAEDecode",
            "WanImageToVideo", "WanFirstLastFrameToVideo", "Wan22ImageToVideoLatent", "FrameInterpolate"} <= GPU_NODE_CLASSES  # fmt: skip
    assert not {"LoadImage", "ImageResize+", "VHS_VideoCombine", "SaveImage", "ImageFromBatch"} & GPU_NODE_CLASSES


def test_the_media_tasks_gpu_nodes_are_in_the_table_too() -> None:
    """A CUDA error from s2v's, animate's or control's own nodes is a GPU fault candidate like i2v's."""
    media = {"WanSoundImageToVideo", "WanSoundImageToVideoExtend", "AudioEncoderLoader", "AudioEncoderEncode",
             "WanAnimateToVideo", "CLIPVisionLoader", "CLIPVisionEncode", "Wan22FunControlToVideo", "FrameInterpolationModelLoader"}  # fmt: skip
    assert media <= GPU_NODE_CLASSES
    fault = "CUDA error: an illegal memory access was encountered"
    assert all(classify("torch.AcceleratorError", fault, node)[0] == FailureKind.GPU_FAULT for node in media)
    assert not {"LoadVideo", "GetVideoComponents", "LoadAudio", "Canny", "TrimVideoLatent"} & GPU_NODE_CLASSES


def test_only_execution_errors_are_classified() -> None:
    cuda = "CUDA error: an illegal memory access was encountered"
    assert classify_error(_failed("torch.AcceleratorError", cuda))[0] is FailureKind.GPU_FAULT
    # A crash report quoting ComfyUI's log is handled by the restart path, not by this policy.
    assert classify_error(ComfyUnavailable(f"ComfyUI exited with exit code 1. {cuda}"))[0] is FailureKind.OTHER
    assert classify_error(InvalidInput(f"prompt: {cuda}"))[0] is FailureKind.OTHER
    # An ExecutionFailed without ComfyUI's type and node says nothing about the GPU.
    assert classify_error(ExecutionFailed(f"node 3 (VAEDecode) raised RuntimeError: {cuda}"))[0] is FailureKind.OTHER


# --- A GPU fault: the device is checked; healthy → ComfyUI restarted, failing → a new worker -----------------


@dataclass
class FakeServer:
    """What the policy uses of ComfyServer: its settings, stop and restart (recorded)."""

    settings: ComfySettings = field(default_factory=lambda: ComfySettings(comfy_python="/opt/venv/bin/python"))
    calls: list[str] = field(default_factory=list)
    restart_fails: bool = False

    def stop(self) -> None:
        self.calls.append("stop")

    def restart(self, reason: str) -> None:
        self.calls.append(f"restart: {reason}")
        if self.restart_fails:
            raise ComfyBootError("ComfyUI exited with exit code 1 while starting")


@dataclass
class Checks:
    """A device check that answers ``problem`` and records the Python it was asked to use."""

    problem: str | None = None
    pythons: list[str] = field(default_factory=list)

    def __call__(self, python: str) -> DeviceCheck:
        self.pythons.append(python)
        return DeviceCheck(self.problem, 2.5)


def test_a_gpu_fault_on_a_healthy_device_restarts_comfyui_and_keeps_the_worker() -> None:
    checks, server = Checks(), FakeServer()
    verdict = WorkerHealth(device_check=checks).after_failure(_failed(*GPU_FAULTS[0]), server)
    assert not verdict.refresh_worker and verdict.kind is FailureKind.GPU_FAULT
    assert checks.pythons == ["/opt/venv/bin/python"]
    assert server.calls[0] == "stop"  # the device is checked without ComfyUI's faulted context holding it
    assert server.calls[1].startswith("restart: a CUDA error (torch.AcceleratorError in KSamplerAdvanced)")
    assert verdict.note == ("A CUDA error in ComfyUI; the GPU checked healthy in a fresh process (2.5 s), so ComfyUI was "
                            "restarted with a fresh CUDA context: resubmit the job.")  # fmt: skip


def test_a_gpu_fault_on_a_failing_device_refreshes_the_worker() -> None:
    checks, server = Checks("nvidia-smi failed: GPU is lost. Reboot the system to recover this GPU"), FakeServer()
    verdict = WorkerHealth(device_check=checks).after_failure(_failed(*GPU_FAULTS[0]), server)
    assert verdict.refresh_worker and verdict.kind is FailureKind.GPU_FAULT
    assert server.calls == ["stop"]  # no restart on a broken GPU: RunPod replaces the worker
    assert verdict.note == ("A GPU fault: the GPU check after the CUDA error failed (nvidia-smi failed: GPU is lost. "
                            "Reboot the system to recover this GPU): RunPod replaces this worker; resubmit the job.")  # fmt: skip
    assert verdict.reason.startswith("GPU fault (torch.AcceleratorError in KSamplerAdvanced), the device check failed")


def test_a_restart_that_fails_after_a_healthy_check_keeps_the_worker_for_the_next_jobs_restart() -> None:
    server = FakeServer(restart_fails=True)
    verdict = WorkerHealth(device_check=Checks()).after_failure(_failed(*GPU_FAULTS[0]), server)
    assert not verdict.refresh_worker and "could not be restarted" in verdict.note


def test_a_gpu_fault_without_a_server_to_restart_is_checked_and_kept_when_healthy() -> None:
    verdict = WorkerHealth(device_check=Checks()).after_failure(_failed(*GPU_FAULTS[0]))
    assert not verdict.refresh_worker


def test_one_oom_is_the_requests_size_and_says_so() -> None:
    health = WorkerHealth()
    verdict = health.after_failure(_failed(*OUT_OF_MEMORY[0]))
    assert not verdict.refresh_worker and verdict.kind is FailureKind.OUT_OF_MEMORY
    assert "fewer frames" in verdict.note and "smaller size" in verdict.note
    assert health.oom_streak == 1


def test_consecutive_ooms_refresh_on_the_limit_and_a_success_resets() -> None:
    assert OOM_STREAK_LIMIT == 2
    health = WorkerHealth()
    oom = _failed(*OUT_OF_MEMORY[0])
    assert not health.after_failure(oom).refresh_worker
    health.after_success()
    assert health.oom_streak == 0
    assert not health.after_failure(oom).refresh_worker
    second = health.after_failure(_failed(*OUT_OF_MEMORY[1]))  # any OOM counts, not only the same text
    assert second.refresh_worker and "2 jobs in a row" in second.note and "fewer frames" in second.note
    assert health.oom_streak == 0


def test_failures_unrelated_to_the_gpu_neither_count_nor_reset() -> None:
    health = WorkerHealth(oom_streak_limit=3, device_check=Checks("never asked"))
    oom = _failed(*OUT_OF_MEMORY[0])
    health.after_failure(oom)
    for other in (
        InvalidInput("options.width: 70 is not a multiple of 16"),
        InvalidImage("image: not an image"),
        ExecutionInterrupted("the job was cancelled"),
        ExecutionTimeout("too slow"),
        _failed(*ORDINARY[0]),
        _failed(*FORGED[0]),
    ):
        verdict = health.after_failure(other, FakeServer())
        assert (verdict.refresh_worker, verdict.note) == (False, "")
    assert health.oom_streak == 1
    health.after_failure(oom)
    assert health.after_failure(oom).refresh_worker


def test_an_error_that_asks_for_a_new_worker_is_passed_through() -> None:
    verdict = WorkerHealth().after_failure(ComfyUnavailable("restarts failed; this worker needs replacing", refresh_worker=True))
    assert verdict.refresh_worker and verdict.note == "" and "comfyui_unavailable" in verdict.reason


# --- ComfyUI's ENOSPC is storage_full -----------------------------------------------------------------------


def test_a_node_that_finds_no_space_is_storage_full() -> None:
    full = _failed("OSError", "[Errno 28] No space left on device: '/tmp/wan22-worker/output/wan22_00001.mp4'", "VHS_VideoCombine")
    mapped = as_storage_full(full)
    assert isinstance(mapped, StorageFull) and mapped.code == "storage_full"
    assert str(mapped) == (
        "node 14 (VHS_VideoCombine) raised OSError: [Errno 28] No space left on device: "
        "'/tmp/wan22-worker/output/wan22_00001.mp4' (ComfyUI writes the job's images, videos and temporary files "
        "in WORKER_DIR, on the container's disk: give the worker a larger disk, or ask for a shorter or smaller video)"
    )
    quota = _failed("OSError", "[Errno 122] Disk quota exceeded: '/tmp/wan22-worker/temp/x.png'", "SaveImage")
    assert isinstance(as_storage_full(quota), StorageFull)


@pytest.mark.parametrize(
    "error",
    [_failed("OSError", "[Errno 5] Input/output error"), _failed("ValueError", "[Errno 28] No space left on device"),
     InvalidInput("prompt: [Errno 28] No space left on device"), _failed(*ORDINARY[0])],
)  # fmt: skip
def test_other_errors_stay_as_they_are(error: Exception) -> None:
    assert as_storage_full(error) is error  # type: ignore[arg-type]
