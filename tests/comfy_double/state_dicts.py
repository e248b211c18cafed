"""Tensor names and shapes of model files, read the way the double's loaders need them.

The real loaders tell models apart by their keys (``load_audio_encoder_from_sd``: wav2vec2 large or
base by ``encoder.layer_norm.bias``; ``FrameInterpolationModelLoader``: FILM or a 5-block RIFE), so
the double reads the keys too, without torch: a ``.safetensors`` header, or the pickled state dict
of a PyTorch zip checkpoint (``.pth``, ``.pt``...) through an unpickler that builds nothing but
shapes. :func:`torch_checkpoint` writes such a checkpoint (zeros) for stand-in files.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Shapes = dict[str, tuple[int, ...]]

_SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def tensor_shapes(path: Path) -> Shapes:
    """Every tensor of the file and its shape; empty when the file holds none the double can read."""
    try:
        if path.suffix in _SAFETENSORS_SUFFIXES:
            return _safetensors_shapes(path)
        return _checkpoint_shapes(path)
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile, pickle.UnpicklingError, EOFError):
        return {}


def _safetensors_shapes(path: Path) -> Shapes:
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(length)) if 0 < length < 100_000_000 else {}
    if not isinstance(header, dict):
        return {}
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


class _ShapeUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict into ``{name: shape}``; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, *rest: tuple(size)
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict")

    def persistent_load(self, pid: Any) -> None:
        return None


def _checkpoint_shapes(path: Path) -> Shapes:
    with zipfile.ZipFile(path) as archive:
        pickled = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
        state = _ShapeUnpickler(io.BytesIO(archive.read(pickled))).load()
    return {str(name): shape for name, shape in state.items() if isinstance(shape, tuple)}


def torch_checkpoint(tensors: Sequence[tuple[str, tuple[int, ...]]], archive_name: str = "archive") -> bytes:
    """A PyTorch zip checkpoint (``torch.save`` of a state dict) of float32 zeros, written without torch."""
    out = bytearray(b"\x80\x02}(")  # protocol 2, an empty dict, then its items
    for index, (name, shape) in enumerate(tensors):
        stride = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
        storage = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text(str(index)) + _text("cpu") + _int(math.prod(shape))
        out += _text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n("
        out += storage + b"tQ" + _int(0) + _ints(shape) + _ints(stride) + b"\x89ccollections\nOrderedDict\n)R" + b"tR"
    out += b"u."
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{archive_name}/data.pkl", bytes(out))
        archive.writestr(f"{archive_name}/byteorder", "little")
        for index, (_name, shape) in enumerate(tensors):
            archive.writestr(f"{archive_name}/data/{index}", bytes(4 * math.prod(shape)))
        archive.writestr(f"{archive_name}/version", "3\n")
    return buffer.getvalue()


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _ints(values: Sequence[int]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"
