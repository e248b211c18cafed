"""comfy_bootstrap/speed.py: the architectures in a CUDA module's fat binaries, the SageAttention check
in ComfyUI's Python, and the attention and --fast choices it feeds (the command lines: test_launch.py)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from comfy_bootstrap.gpu import GpuInfo
from comfy_bootstrap.speed import (
    CudaArchs,
    SageProbe,
    choose_fast,
    fast_in_args,
    parse_probe_output,
    probe_sageattention,
    read_fatbin_archs,
    sage_problem,
)

ELF, PTX = 2, 1
EXTENSION = "cpython-311-x86_64-linux-gnu.so"


def fatbin(*entries: tuple[int, int]) -> bytes:
    """A fat binary container as nvcc embeds it: a 16-byte header, then per entry a header (64 bytes;
    80 for PTX and 112 for machine code from sm_100 on), its payload and padding to 8 bytes."""
    body = b""
    for kind, arch in entries:
        payload = bytes(range(arch % 7 + 5))  # stands for the compressed cubin / PTX
        padded = (len(payload) + 7) & ~7
        size = 64 if arch < 100 else 112 if kind == ELF else 80
        head = struct.pack("<HHIQIIII", kind, 0x0101, size, padded, len(payload), 0, 0x00080001, arch)
        body += head.ljust(size, b"\0") + payload.ljust(padded, b"\0")
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def write_module(path: Path, *containers: bytes) -> Path:
    """A stand-in shared library: ELF-ish bytes with the containers inside, as in .nv_fatbin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF" + b"\x00" * 60 + b"code".join(containers) + b"\x00" * 32)
    return path


# ---------------------------------------------------------------------------- fat binaries
def test_the_architectures_of_every_container_are_read(tmp_path: Path) -> None:
    module = write_module(
        tmp_path / "_qattn_sm89.so",
        fatbin((ELF, 89), (PTX, 89), (ELF, 90)),
        fatbin((ELF, 120), (PTX, 120), (ELF, 100)),  # the larger entry headers of sm_100 and sm_120
    )
    assert read_fatbin_archs(module) == CudaArchs(
        sass=frozenset({(8, 9), (9, 0), (12, 0), (10, 0)}), ptx=frozenset({(8, 9), (12, 0)})
    )


def test_no_container_empty_or_truncated_files_give_no_architecture(tmp_path: Path) -> None:
    assert read_fatbin_archs(write_module(tmp_path / "plain.so")) == CudaArchs()
    (tmp_path / "empty.so").write_bytes(b"")
    assert read_fatbin_archs(tmp_path / "empty.so") == CudaArchs()
    cut = fatbin((ELF, 89), (ELF, 120))
    second = 16 + 64 + 16  # the first entry's header and padded payload
    (tmp_path / "cut.so").write_bytes(cut[: second + 20])  # the second entry's header is cut short
    assert read_fatbin_archs(tmp_path / "cut.so").sass == {(8, 9)}
    (tmp_path / "magic_at_end.so").write_bytes(b"\x00" * 8 + fatbin()[:10])
    assert read_fatbin_archs(tmp_path / "magic_at_end.so") == CudaArchs()


@pytest.mark.parametrize(
    ("built", "gpu", "runs"),
    [
        ({(8, 9)}, (8, 9), True),
        ({(8, 6)}, (8, 9), True),  # machine code runs on a later minor version of the same major
        ({(8, 9)}, (8, 6), False),
        ({(8, 9), (9, 0)}, (12, 0), False),  # never across major versions
        ({(12, 0)}, (12, 0), True),
        (set(), (9, 0), False),
    ],
)
def test_machine_code_runs_on_its_major_version_from_its_minor_on(built, gpu, runs) -> None:
    assert CudaArchs(sass=frozenset(built)).runs_on(gpu) is runs
    assert not CudaArchs(ptx=frozenset(built)).runs_on(gpu)  # PTX alone is not taken


# ---------------------------------------------------------------------------- the check in ComfyUI's Python
def fake_sageattention(root: Path, archs: dict[str, tuple[int, ...] | None], *, enabled: bool = True, slow: float = 0) -> Path:
    """A sageattention package: core.py with SageAttention 2.2's SM*_ENABLED flags, and its compiled
    modules as files holding fat binaries (found by the check, never loaded)."""
    package = root / "sageattention"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"import time\ntime.sleep({slow})\nfrom .core import sageattn\n")
    (package / "core.py").write_text(
        "def sageattn(q, k, v, **kwargs):\n    raise NotImplementedError\n"
        + "".join(f"SM{sm}_ENABLED = {enabled}\n" for sm in (80, 89, 90))
    )
    for name, sms in archs.items():
        if sms is not None:
            write_module(package / f"{name}.{EXTENSION}", fatbin(*((ELF, sm) for sm in sms)))
    dist = root / "sageattention-2.2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sageattention\nVersion: 2.2.0\n")
    return root


IMAGE_BUILD = {"_qattn_sm80": (89, 90, 120), "_qattn_sm89": (89, 90, 120), "_qattn_sm90": (90,), "_fused": (89, 90, 120)}


def test_the_check_finds_the_modules_and_their_architectures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(fake_sageattention(tmp_path, IMAGE_BUILD)))
    probe = probe_sageattention(sys.executable)
    assert probe.error is None and probe.version == "2.2.0"
    assert probe.kernels["_qattn_sm90"] == CudaArchs(sass=frozenset({(9, 0)}))
    assert probe.kernels["_qattn_sm89"].sass == {(8, 9), (9, 0), (12, 0)}
    assert probe.loaded == {"_qattn_sm80": True, "_qattn_sm89": True, "_qattn_sm90": True, "_fused": True}
    assert 0 < probe.seconds < 30
    assert probe.describe() == (
        "SageAttention 2.2.0: _fused sm_89 sm_90 sm_120, _qattn_sm80 sm_89 sm_90 sm_120, "
        "_qattn_sm89 sm_89 sm_90 sm_120, _qattn_sm90 sm_90"
    )
    for gpu in (GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), "570", 24564), GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), "570", 81559),
                GpuInfo("NVIDIA GeForce RTX 5090", (12, 0), "570", 32607)):  # fmt: skip
        assert sage_problem(probe, [gpu]) is None


def test_a_build_without_hopper_and_a_module_that_did_not_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = {"_qattn_sm80": (89,), "_qattn_sm89": (89,), "_qattn_sm90": None, "_fused": (89,)}
    monkeypatch.setenv("PYTHONPATH", str(fake_sageattention(tmp_path, build, enabled=False)))
    probe = probe_sageattention(sys.executable)
    assert probe.kernels["_qattn_sm90"] is None and probe.loaded["_qattn_sm89"] is False
    assert "_qattn_sm90 absent" in probe.describe() and "_qattn_sm89 sm_89 (did not import)" in probe.describe()
    h100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), "570", 81559)
    assert sage_problem(probe, [h100]) == (
        "SageAttention 2.2.0 has no compiled module _qattn_sm90, which sm_90 (NVIDIA H100 80GB HBM3) runs"
    )


def test_the_check_says_why_sageattention_is_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "nothing"))
    missing = probe_sageattention(sys.executable)
    assert missing.error == "ModuleNotFoundError: No module named 'sageattention'"
    assert missing.describe() == "SageAttention unusable: ModuleNotFoundError: No module named 'sageattention'"
    assert probe_sageattention(str(tmp_path / "no-python")).error.startswith(f"cannot run {tmp_path}/no-python: ")
    monkeypatch.setenv("PYTHONPATH", str(fake_sageattention(tmp_path / "slow", IMAGE_BUILD, slow=30)))
    assert probe_sageattention(sys.executable, timeout=1).error == "importing it took more than 1 s"


def test_the_check_never_imports_torch_into_the_worker() -> None:
    assert "torch" not in sys.modules  # the worker's tests run without torch; the check is a subprocess


@pytest.mark.parametrize(
    ("stdout", "error"),
    [
        ("", "the check printed no result (nothing)"),
        ("Failed to get CUDA version\n", "the check printed no result (Failed to get CUDA version)"),
        ("{not json\n", "the check printed '{not json': "),
        (json.dumps({"error": "ImportError: libcuda.so.1: cannot open shared object file"}),
         "ImportError: libcuda.so.1: cannot open shared object file"),
    ],
)  # fmt: skip
def test_what_the_check_printed_is_read_defensively(stdout: str, error: str) -> None:
    assert parse_probe_output(stdout).error.startswith(error)


def test_a_module_that_cannot_be_read_counts_as_holding_no_code(tmp_path: Path) -> None:
    line = json.dumps({"version": "2.2.0", "modules": {"_qattn_sm89": str(tmp_path / "gone.so"), "_qattn_sm90": None},
                       "loaded": {"_qattn_sm89": True}})  # fmt: skip
    probe = parse_probe_output("some warning\n" + line + "\n")
    assert probe.kernels == {"_qattn_sm89": CudaArchs(), "_qattn_sm90": None}
    assert probe.error is None and probe.version == "2.2.0"


# ---------------------------------------------------------------------------- --fast
def test_fast_in_extra_args_is_read_as_argparse_does() -> None:
    assert fast_in_args(["--reserve-vram", "1"]) is None
    assert fast_in_args(["--fast"]) == ("fp16_accumulation", "fp8_matrix_mult", "cublas_ops", "autotune")
    assert fast_in_args(["--fast", "autotune", "cublas_ops", "--lowvram"]) == ("autotune", "cublas_ops")
    assert fast_in_args(["--fast", "autotune", "--fast", "fp8_matrix_mult"]) == ("fp8_matrix_mult",)


def test_auto_fast_is_fp8_matrix_multiplication_on_fp8_tensor_cores_only() -> None:
    ada = GpuInfo("NVIDIA L40S", (8, 9), "570", 46068)
    blackwell = GpuInfo("NVIDIA GeForce RTX 5090", (12, 0), "570", 32607)
    ampere = GpuInfo("NVIDIA A100-SXM4-80GB", (8, 0), "570", 81920)
    assert choose_fast("auto", [ada]).features == ("fp8_matrix_mult",)
    assert choose_fast("auto", [blackwell, ada]).features == ("fp8_matrix_mult",)
    assert choose_fast("auto", [ampere]).features == ()
    assert choose_fast("auto", []).features == choose_fast("auto", None).features == ()
    assert choose_fast("fp8_matrix_mult", [ampere]).features == ("fp8_matrix_mult",)  # asked for: passed as is


def test_sage_problem_without_a_probe_or_a_gpu() -> None:
    ada = GpuInfo("NVIDIA L40S", (8, 9), "570", 46068)
    assert sage_problem(None, [ada]) == "SageAttention was not checked"
    assert sage_problem(SageProbe(version="2.2.0"), None) == "no NVIDIA GPU is visible (nvidia-smi is not installed or failed)"
    assert sage_problem(None, []) == "no NVIDIA GPU is visible (nvidia-smi lists no GPU)"
