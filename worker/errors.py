"""Errors a job can end with before or after ComfyUI runs, each with a code and a clear message.

ComfyUI-side errors live in :mod:`comfy_bootstrap.errors`; the handler formats both the same way.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: the job cannot be done as asked; the message says what to change."""

    code = "worker_error"
    refresh_worker = False
    #: Raised and logged at boot only: no job answers with this code.
    boot_only = False


class InvalidInput(WorkerError):
    """A field of the job input is missing, of the wrong type, out of range or unknown."""

    code = "invalid_input"


class InvalidImage(WorkerError):
    """The image (base64, data URI or URL) cannot be used: not an image, too big, unreachable."""

    code = "invalid_image"


class ModelsInvalid(WorkerError):
    """A model file is on the volume but cannot be used: cut short, or not a safetensors file at all.

    Beside ComfyUI's :class:`comfy_bootstrap.errors.ModelsMissing`, but raised by the worker: the
    check reads the file's format (worker/model_files.py), not anything ComfyUI says.
    """

    code = "models_invalid"


class WorkflowError(WorkerError):
    """A stored graph lacks a node role the worker injects into (a packaging fault); the worker stops at boot."""

    code = "workflow_invalid"
    boot_only = True


class OutputTooLarge(WorkerError):
    """The response would exceed RunPod's payload limit, which drops results silently."""

    code = "output_too_large"


class StorageFailed(WorkerError):
    """The video could not be put in the S3 bucket: wrong bucket or keys, or an unreachable endpoint."""

    code = "storage_failed"


class StorageFull(WorkerError):
    """A file the job needs cannot be written: the LoRA cache's budget is used up, or its disk is full."""

    code = "storage_full"
