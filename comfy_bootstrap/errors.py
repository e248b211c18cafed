"""Errors of the ComfyUI side, each carrying a short ``code`` and a message a user can act on.

The handler turns any of these into RunPod's ``{"error": "<code>: <message>"}``. ``refresh_worker``
marks faults after which this worker should not take more jobs (RunPod then replaces it).
"""

from __future__ import annotations


class ComfyError(Exception):
    """Base class: something went wrong talking to, or inside, ComfyUI."""

    code = "comfyui_error"
    refresh_worker = False
    #: Raised and logged at boot only: no job answers with this code.
    boot_only = False

    def __init__(self, message: str, *, refresh_worker: bool | None = None):
        super().__init__(message)
        if refresh_worker is not None:
            self.refresh_worker = refresh_worker


class ComfyBootError(ComfyError):
    """ComfyUI did not start, or exited while starting; the message quotes its log tail.

    Logged at boot; a job that finds ComfyUI down gets :class:`ComfyUnavailable` quoting it.
    """

    code = "comfyui_boot_failed"
    boot_only = True


class ComfyUnavailable(ComfyError):
    """ComfyUI stopped answering (crashed, hung, or the connection broke) and could not be used."""

    code = "comfyui_unavailable"

    def __init__(self, message: str, *, refresh_worker: bool | None = None, host_oom: bool = False):
        super().__init__(message, refresh_worker=refresh_worker)
        #: The kernel's out-of-memory killer ended ComfyUI: the host's RAM ran out.
        self.host_oom = host_oom


class ModelsMissing(ComfyError):
    """Model files the workflow needs are not where ComfyUI looks for them."""

    code = "models_missing"


class PromptRejected(ComfyError):
    """ComfyUI refused the filled workflow (HTTP 400 from /prompt); the message lists per-node errors."""

    code = "workflow_rejected"


class ExecutionFailed(ComfyError):
    """A node raised while the prompt ran (websocket ``execution_error``).

    Besides the one-line message, it keeps what ComfyUI reported, so the worker's health policy
    (``worker/health.py``) can tell a CUDA fault or an out-of-memory from an ordinary error.
    """

    code = "execution_failed"

    def __init__(
        self,
        message: str,
        *,
        exception_type: str = "",
        exception_message: str = "",
        node_type: str | None = None,
    ):
        super().__init__(message)
        #: ComfyUI's ``exception_type``, e.g. ``torch.OutOfMemoryError`` or ``torch.AcceleratorError``.
        self.exception_type = exception_type
        #: ComfyUI's whole ``exception_message`` (the message above keeps only its first line).
        self.exception_message = exception_message
        self.node_type = node_type


class ExecutionInterrupted(ComfyError):
    """The prompt was interrupted (cancelled job, or someone called /interrupt)."""

    code = "cancelled"


class ExecutionTimeout(ComfyError):
    """The prompt ran past the job timeout and was interrupted."""

    code = "timeout"

    def __init__(self, message: str, *, unresponsive: bool = False):
        super().__init__(message)
        #: ComfyUI did not confirm the interrupt: the caller restarts it before the next job.
        self.unresponsive = unresponsive


class OutputMissing(ComfyError):
    """The prompt finished but the video it reported cannot be found or is not an MP4."""

    code = "output_missing"
