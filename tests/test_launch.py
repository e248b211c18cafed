"""ComfyUI's command line: flags, the listen address, pinned memory, attention and --fast per GPU, and
COMFY_EXTRA_ARGS warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from comfy_bootstrap.config import ComfySettings as Settings
from comfy_bootstrap.gpu import GpuInfo
from comfy_bootstrap.launch import (
    GIB,
    HARMFUL_FLAGS,
    MemoryInfo,
    build_command,
    needs_gpus,
    needs_sage_probe,
    plan_launch,
    read_memory_info,
)
from comfy_bootstrap.speed import CudaArchs, SageProbe

NO_LIMIT = MemoryInfo(host_ram=64 * GIB, cgroup_limit=None)

# The GPUs of the matrix: none visible, and one card per compute capability.
RTX_A6000 = GpuInfo("NVIDIA RTX A6000", (8, 6), "570.124.06", 49140)
RTX_4090 = GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), "570.124.06", 24564)
L40S = GpuInfo("NVIDIA L40S", (8, 9), "570.124.06", 46068)
H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), "570.124.06", 81559)
RTX_5090 = GpuInfo("NVIDIA GeForce RTX 5090", (12, 0), "570.124.06", 32607)
GPUS = {"none": None, "sm_86": [RTX_A6000], "sm_89": [RTX_4090], "sm_90": [H100], "sm_120": [RTX_5090]}


def archs(*sms: int, ptx: tuple[int, ...] = ()) -> CudaArchs:
    return CudaArchs(frozenset(divmod(s, 10) for s in sms), frozenset(divmod(s, 10) for s in ptx))


#: SageAttention 2.2 as the image builds it (TORCH_CUDA_ARCH_LIST="8.9;9.0;12.0"): every module
#: carries sm_89, sm_90a and sm_120a code; _qattn_sm90 is built for sm_90 only.
SAGE_IMAGE = SageProbe(
    version="2.2.0",
    kernels={"_qattn_sm80": archs(89, 90, 120), "_qattn_sm89": archs(89, 90, 120), "_qattn_sm90": archs(90),
             "_fused": archs(89, 90, 120)},
    loaded={"_qattn_sm80": True, "_qattn_sm89": True, "_qattn_sm90": True, "_fused": True},
)  # fmt: skip


def make_settings(tmp_path: Path, **kw) -> Settings:
    base = {"work_dir": tmp_path / "work", "comfy_python": "/usr/bin/python3", "port": 8190}
    base.update(kw)
    return Settings(**base)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- read_memory_info
def test_memory_info_cgroup_v2_limit(tmp_path: Path) -> None:
    write(tmp_path / "cg" / "memory.max", "34359738368\n")
    write(tmp_path / "meminfo", "MemTotal:       65843916 kB\nMemFree:  1 kB\n")
    info = read_memory_info(tmp_path / "cg", tmp_path / "meminfo")
    assert info.cgroup_limit == 32 * GIB
    assert info.host_ram == 65843916 * 1024
    assert info.limited
    assert info.cgroup_source == str(tmp_path / "cg" / "memory.max")


def test_memory_info_cgroup_v2_max_means_no_limit(tmp_path: Path) -> None:
    write(tmp_path / "cg" / "memory.max", "max\n")
    write(tmp_path / "meminfo", "MemTotal: 1024 kB\n")
    info = read_memory_info(tmp_path / "cg", tmp_path / "meminfo")
    assert info.cgroup_limit is None
    assert not info.limited


def test_memory_info_cgroup_v1(tmp_path: Path) -> None:
    write(tmp_path / "cg" / "memory" / "memory.limit_in_bytes", str(16 * GIB))
    info = read_memory_info(tmp_path / "cg", tmp_path / "missing")
    assert info.cgroup_limit == 16 * GIB
    assert info.host_ram is None
    assert not info.limited  # host RAM unknown: nothing to compare with


def test_memory_info_cgroup_v1_unlimited_is_huge_number(tmp_path: Path) -> None:
    write(tmp_path / "cg" / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    assert read_memory_info(tmp_path / "cg", tmp_path / "missing").cgroup_limit is None


def test_memory_info_nothing_readable(tmp_path: Path) -> None:
    info = read_memory_info(tmp_path / "nope", tmp_path / "nope2")
    assert info == MemoryInfo(host_ram=None, cgroup_limit=None, cgroup_source=None)


# ---------------------------------------------------------------------------- command line
def test_default_command_exact(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    work = tmp_path / "work"
    assert build_command(s, memory=NO_LIMIT) == [
        "/usr/bin/python3", "main.py",
        "--listen", "127.0.0.1", "--port", "8190",
        "--disable-auto-launch", "--preview-method", "none",
        "--input-directory", str(work / "input"),
        "--output-directory", str(work / "output"),
        "--temp-directory", str(work / "temp"),
        "--user-directory", str(work / "user"),
        "--database-url", f"sqlite:///{work / 'comfyui.db'}",
        "--extra-model-paths-config", str(work / "extra_model_paths.yaml"),
        "--use-pytorch-cross-attention",
    ]  # fmt: skip


def test_never_harmful_flags_by_default(tmp_path: Path) -> None:
    for mode in ("auto", "on", "off"):
        cmd = build_command(make_settings(tmp_path, pinned_memory=mode), memory=NO_LIMIT)
        assert not set(cmd) & set(HARMFUL_FLAGS)


def test_plan_has_notes_for_the_boot_log(tmp_path: Path) -> None:
    plan = plan_launch(make_settings(tmp_path), memory=NO_LIMIT)
    assert plan.command[0] == "/usr/bin/python3"
    assert any("pinned memory: on" in n for n in plan.notes)
    assert any("attention: pytorch" in n for n in plan.notes)
    assert plan.warnings == []


def test_relative_work_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cmd = build_command(make_settings(tmp_path, work_dir=Path("rel")), memory=NO_LIMIT)
    assert cmd[cmd.index("--user-directory") + 1] == str(tmp_path / "rel" / "user")


@pytest.mark.parametrize(
    ("attention", "flag"),
    [("flash", "--use-flash-attention"), ("split", "--use-split-cross-attention")],
)
def test_attention_flag(tmp_path: Path, attention: str, flag: str) -> None:
    cmd = build_command(make_settings(tmp_path, attention=attention), memory=NO_LIMIT)
    assert flag in cmd
    assert "--use-pytorch-cross-attention" not in cmd


def test_sage_flag_where_its_kernels_are(tmp_path: Path) -> None:
    plan = plan_launch(make_settings(tmp_path, attention="sage"), memory=NO_LIMIT, gpus=[RTX_4090], sage=SAGE_IMAGE)
    assert "--use-sage-attention" in plan.command and "--use-pytorch-cross-attention" not in plan.command
    assert plan.attention == "sage" and plan.warnings == []
    assert "attention: sage (--use-sage-attention): SageAttention 2.2.0 has kernels for sm_89 (NVIDIA GeForce RTX 4090)" in plan.notes


def test_xformers_needs_no_flag(tmp_path: Path) -> None:
    cmd = build_command(make_settings(tmp_path, attention="xformers"), memory=NO_LIMIT)
    assert not [a for a in cmd if a.startswith("--use-") and "attention" in a]


def test_user_attention_flag_replaces_ours(tmp_path: Path) -> None:
    """ComfyUI's attention flags are mutually exclusive: two of them make it exit at boot."""
    s = make_settings(tmp_path, extra_args=("--use-sage-attention",))
    cmd = build_command(s, memory=NO_LIMIT)
    assert cmd.count("--use-sage-attention") == 1
    assert "--use-pytorch-cross-attention" not in cmd


# ---------------------------------------------------------------------------- listen address
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_host_no_warning(tmp_path: Path, host: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        plan = plan_launch(make_settings(tmp_path, host=host), memory=NO_LIMIT)
    assert plan.command[plan.command.index("--listen") + 1] == host
    assert plan.warnings == [] and not caplog.records


def test_non_loopback_host_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        plan = plan_launch(make_settings(tmp_path, host="0.0.0.0"), memory=NO_LIMIT)
    assert plan.command[plan.command.index("--listen") + 1] == "0.0.0.0"
    assert "not a loopback address" in caplog.text
    assert len(plan.warnings) == 1


# ---------------------------------------------------------------------------- pinned memory
@pytest.mark.parametrize(
    ("memory", "disabled"),
    [
        (MemoryInfo(host_ram=64 * GIB, cgroup_limit=32 * GIB), True),  # limit below host RAM
        (MemoryInfo(host_ram=64 * GIB, cgroup_limit=62 * GIB), True),  # even just below
        (MemoryInfo(host_ram=64 * GIB, cgroup_limit=64 * GIB), False),  # limit = host: nothing binds
        (MemoryInfo(host_ram=64 * GIB, cgroup_limit=128 * GIB), False),
        (MemoryInfo(host_ram=64 * GIB, cgroup_limit=None), False),  # no limit
        (MemoryInfo(host_ram=None, cgroup_limit=8 * GIB), False),  # unknown host RAM: default kept
    ],
)
def test_pinned_memory_auto(tmp_path: Path, memory: MemoryInfo, disabled: bool) -> None:
    plan = plan_launch(make_settings(tmp_path, pinned_memory="auto"), memory=memory)
    assert ("--disable-pinned-memory" in plan.command) is disabled
    assert plan.pinned_memory is not disabled


def test_pinned_memory_forced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limited = MemoryInfo(host_ram=64 * GIB, cgroup_limit=16 * GIB)
    assert "--disable-pinned-memory" in build_command(make_settings(tmp_path, pinned_memory="off"), memory=NO_LIMIT)
    with caplog.at_level(logging.WARNING):
        cmd = build_command(make_settings(tmp_path, pinned_memory="on"), memory=limited)
    assert "--disable-pinned-memory" not in cmd
    assert "OOM" in caplog.text


def test_pinned_memory_flag_not_duplicated(tmp_path: Path) -> None:
    s = make_settings(tmp_path, pinned_memory="off", extra_args=("--disable-pinned-memory",))
    assert build_command(s, memory=NO_LIMIT).count("--disable-pinned-memory") == 1


# ---------------------------------------------------------------------------- COMFY_EXTRA_ARGS
@pytest.mark.parametrize(
    "flag", ["--highvram", "--gpu-only", "--novram", "--cpu", "--disable-smart-memory", "--cache-none"]
)
def test_harmful_extra_flag_kept_with_warning(tmp_path: Path, flag: str, caplog: pytest.LogCaptureFixture) -> None:
    s = make_settings(tmp_path, extra_args=(flag, "--reserve-vram", "1.5"))
    with caplog.at_level(logging.WARNING, logger="comfy_bootstrap.launch"):
        cmd = build_command(s, memory=NO_LIMIT)
    assert cmd[-3:] == [flag, "--reserve-vram", "1.5"]  # user's args last, unchanged
    assert flag in caplog.text and "kept" in caplog.text


def test_managed_flag_in_extra_args_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = make_settings(tmp_path, extra_args=("--port=9000",))
    with caplog.at_level(logging.WARNING):
        cmd = build_command(s, memory=NO_LIMIT)
    assert cmd[-1] == "--port=9000"
    assert "--port" in caplog.text and "overrides" in caplog.text


# ---------------------------------------------------------------------------- attention × --fast × GPU
#: What ComfyUI is told for each COMFY_ATTENTION on each GPU, SageAttention built as in the image.
ATTENTION_EXPECTED = {
    "pytorch": {gpu: ["--use-pytorch-cross-attention"] for gpu in GPUS},
    "flash": {gpu: ["--use-flash-attention"] for gpu in GPUS},
    "split": {gpu: ["--use-split-cross-attention"] for gpu in GPUS},
    "xformers": {gpu: [] for gpu in GPUS},
    # sm_86 runs SageAttention's Triton kernels (compiled at first use), the others its CUDA kernels.
    "sage": {"none": ["--use-pytorch-cross-attention"], "sm_86": ["--use-sage-attention"],
             "sm_89": ["--use-sage-attention"], "sm_90": ["--use-sage-attention"], "sm_120": ["--use-sage-attention"]},
}  # fmt: skip
FAST_EXPECTED = {
    "off": {gpu: [] for gpu in GPUS},
    "auto": {"none": [], "sm_86": [], "sm_89": ["--fast", "fp8_matrix_mult"], "sm_90": ["--fast", "fp8_matrix_mult"],
             "sm_120": ["--fast", "fp8_matrix_mult"]},
    "fp16_accumulation,autotune": {gpu: ["--fast", "fp16_accumulation", "autotune"] for gpu in GPUS},
    "cublas_ops": {gpu: ["--fast", "cublas_ops"] for gpu in GPUS},
}  # fmt: skip


@pytest.mark.parametrize("gpu", list(GPUS))
@pytest.mark.parametrize("fast", list(FAST_EXPECTED))
@pytest.mark.parametrize("attention", list(ATTENTION_EXPECTED))
def test_every_attention_fast_and_gpu_gives_its_command_line(tmp_path: Path, attention: str, fast: str, gpu: str) -> None:
    settings = make_settings(tmp_path, attention=attention, fast=fast)
    gpus = GPUS[gpu]
    assert needs_gpus(settings) is (attention == "sage" or fast == "auto")
    sage = SAGE_IMAGE if needs_sage_probe(settings, gpus) else None
    plan = plan_launch(settings, memory=NO_LIMIT, gpus=gpus, sage=sage)
    tail = plan.command[plan.command.index("--extra-model-paths-config") + 2 :]
    assert tail == ATTENTION_EXPECTED[attention][gpu] + FAST_EXPECTED[fast][gpu]
    assert plan.fast == tuple(FAST_EXPECTED[fast][gpu][1:])
    fell_back = attention == "sage" and tail[:1] == ["--use-pytorch-cross-attention"]
    assert plan.attention == ("pytorch" if fell_back else attention)
    assert len(plan.warnings) == int(fell_back)
    assert plan.report() == {"attention": plan.attention, "fast": list(plan.fast)}


def test_no_gpu_read_and_no_sage_check_unless_a_setting_needs_them(tmp_path: Path) -> None:
    assert not needs_gpus(make_settings(tmp_path))
    assert not needs_gpus(make_settings(tmp_path, fast="fp8_matrix_mult", attention="flash"))
    # the user's own flags win, so nothing about the GPU is needed
    assert not needs_gpus(make_settings(tmp_path, attention="sage", extra_args=("--use-flash-attention",)))
    assert not needs_gpus(make_settings(tmp_path, fast="auto", extra_args=("--fast", "autotune")))
    sage = make_settings(tmp_path, attention="sage")
    assert needs_sage_probe(sage, [H100]) and needs_sage_probe(sage, [RTX_4090, L40S])
    assert not needs_sage_probe(sage, None) and not needs_sage_probe(sage, [])
    assert not needs_sage_probe(sage, [GpuInfo("Tesla T4", (7, 5), "570", 15360)])  # no SageAttention kernels exist


def test_auto_fast_on_mixed_gpus_needs_fp8_on_every_one(tmp_path: Path) -> None:
    plan = plan_launch(make_settings(tmp_path, fast="auto"), memory=NO_LIMIT, gpus=[H100, RTX_A6000])
    assert "--fast" not in plan.command
    assert "--fast: none (COMFY_FAST=auto: sm_86 (NVIDIA RTX A6000) has no fp8 tensor cores)" in plan.notes


def test_the_boot_log_says_what_fast_was_chosen_and_why(tmp_path: Path) -> None:
    auto = plan_launch(make_settings(tmp_path, fast="auto"), memory=NO_LIMIT, gpus=[L40S])
    assert (
        "--fast fp8_matrix_mult (COMFY_FAST=auto: sm_89 (NVIDIA L40S) has fp8 tensor cores; fp16_accumulation, "
        "cublas_ops and autotune are opt-in)"
    ) in auto.notes
    assert "--fast: none (COMFY_FAST=auto, but no NVIDIA GPU is visible)" in plan_launch(
        make_settings(tmp_path, fast="auto"), memory=NO_LIMIT, gpus=None
    ).notes
    assert "--fast: none (COMFY_FAST=off)" in plan_launch(make_settings(tmp_path), memory=NO_LIMIT).notes
    chosen = plan_launch(make_settings(tmp_path, fast="fp16_accumulation"), memory=NO_LIMIT)
    assert any(n.startswith("--fast fp16_accumulation (COMFY_FAST=fp16_accumulation); fp16_accumulation changes numerics")
               for n in chosen.notes)  # fmt: skip


@pytest.mark.parametrize(
    ("gpu", "probe", "reason"),
    [
        (RTX_4090, SageProbe(error="ModuleNotFoundError: No module named 'sageattention'"),
         "ComfyUI's Python cannot import SageAttention: ModuleNotFoundError: No module named 'sageattention'"),
        (RTX_5090, SageProbe(version="2.2.0", kernels={"_qattn_sm89": archs(89), "_fused": archs(89)}),
         "SageAttention 2.2.0's _qattn_sm89 holds machine code for sm_89, not for sm_120 (NVIDIA GeForce RTX 5090): "
         "rebuild it with TORCH_CUDA_ARCH_LIST including 12.0"),
        (H100, SageProbe(version="2.2.0", kernels={"_qattn_sm89": archs(89), "_qattn_sm90": None, "_fused": archs(89)}),
         "SageAttention 2.2.0 has no compiled module _qattn_sm90, which sm_90 (NVIDIA H100 80GB HBM3) runs"),
        (H100, SageProbe(version="2.2.0", kernels={"_qattn_sm90": archs(90), "_fused": archs(90)},
                         loaded={"_qattn_sm90": False}),
         "SageAttention 2.2.0's module _qattn_sm90, which sm_90 (NVIDIA H100 80GB HBM3) runs, did not import"),
        (RTX_4090, SageProbe(version="2.2.0", kernels={"_qattn_sm89": archs(ptx=(89,)), "_fused": archs(89)}),
         "SageAttention 2.2.0's _qattn_sm89 holds machine code for no architecture (PTX for sm_89), not for sm_89 "
         "(NVIDIA GeForce RTX 4090): rebuild it with TORCH_CUDA_ARCH_LIST including 8.9"),
        (GpuInfo("Tesla T4", (7, 5), "570", 15360), None,
         "SageAttention 2.2 has no kernels for sm_75 (Tesla T4); it runs on sm_80, sm_86, sm_89, sm_90, sm_120"),
    ],
)  # fmt: skip
def test_sage_that_cannot_run_falls_back_to_pytorch_with_one_warning(
    tmp_path: Path, gpu: GpuInfo, probe: SageProbe | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="comfy_bootstrap.launch"):
        plan = plan_launch(make_settings(tmp_path, attention="sage"), memory=NO_LIMIT, gpus=[gpu], sage=probe)
    assert "--use-pytorch-cross-attention" in plan.command and "--use-sage-attention" not in plan.command
    assert plan.attention == "pytorch"
    assert plan.warnings == [
        f"COMFY_ATTENTION=sage: {reason}; ComfyUI is launched with PyTorch attention (--use-pytorch-cross-attention) "
        "instead. SageAttention is in the image built with INSTALL_SAGEATTENTION=1 (make build-sage)"
    ]
    assert [r.getMessage() for r in caplog.records] == plan.warnings
    assert f"attention: pytorch (--use-pytorch-cross-attention), instead of sage: {reason}" in plan.notes


def test_sage_without_a_visible_gpu_falls_back(tmp_path: Path) -> None:
    for gpus, seen in ((None, "nvidia-smi is not installed or failed"), ([], "nvidia-smi lists no GPU")):
        plan = plan_launch(make_settings(tmp_path, attention="sage"), memory=NO_LIMIT, gpus=gpus)
        assert plan.attention == "pytorch"
        assert plan.warnings[0].startswith(f"COMFY_ATTENTION=sage: no NVIDIA GPU is visible ({seen}); ")


def test_flags_of_extra_args_win_and_are_reported(tmp_path: Path) -> None:
    s = make_settings(tmp_path, attention="sage", fast="auto", extra_args=("--use-quad-cross-attention", "--fast"))
    plan = plan_launch(s, memory=NO_LIMIT, gpus=[H100])
    assert plan.command[-2:] == ["--use-quad-cross-attention", "--fast"]
    assert plan.command.count("--fast") == 1 and "--use-sage-attention" not in plan.command
    assert plan.report() == {"attention": "quad", "fast": ["fp16_accumulation", "fp8_matrix_mult", "cublas_ops", "autotune"]}
    assert plan.warnings == []
    named = plan_launch(make_settings(tmp_path, extra_args=("--fast", "autotune", "--reserve-vram", "2")), memory=NO_LIMIT)
    assert named.fast == ("autotune",) and named.command.count("--fast") == 1
