"""A protocol-faithful test double of the ComfyUI v0.30.0 server (+ VHS, essentials, and the RIFE VFI
pack the recordings were made with: the VHS recordings feed on its output), its
media nodes included (sound, S2V, video in, Animate, Fun-Control, frame interpolation, EasyCache).

Two ways to run it:

- as ComfyUI's child process: ``python tests/comfy_double/main.py --listen 127.0.0.1 --port 8188
  --extra-model-paths-config extra_model_paths.yaml ...`` (any cwd);
- in-process: ``with DoubleServer(models_root=..., input_dir=..., output_dir=...) as comfy:``.

Its behaviour is taken from the recordings in ``tests/recordings/``; see ``faults.py`` for the
fault switches and ``server.py`` for the ``/__double__`` control API.

The public names are imported lazily, so ``main.py`` can reject a bad command line (exit 2) without
first importing aiohttp, PyAV and numpy - as fast as ComfyUI's own argparse does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .faults import FaultSpecError
    from .inprocess import ALL_MODEL_FILES, WORKFLOW_MODEL_FILES, DoubleServer, create_model_files

__all__ = ["ALL_MODEL_FILES", "DoubleServer", "FaultSpecError", "WORKFLOW_MODEL_FILES", "create_model_files"]

_LAZY = {
    "ALL_MODEL_FILES": "inprocess",
    "DoubleServer": "inprocess",
    "WORKFLOW_MODEL_FILES": "inprocess",
    "create_model_files": "inprocess",
    "FaultSpecError": "faults",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
