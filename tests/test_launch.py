"""ComfyUI's command line: flags, the listen address, pinned memory, and COMFY_EXTRA_ARGS warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from comfy_bootstrap.config import ComfySettings as Settings
from comfy_bootstrap.launch import (
    GIB,
    HARMFUL_FLAGS,
    MemoryInfo,
    build_command,
    plan_launch,
    read_memory_info,
)

NO_LIMIT = MemoryInfo(host_ram=64 * GIB, cgroup_limit=None)


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
    [("sage", "--use-sage-attention"), ("flash", "--use-flash-attention"), ("split", "--use-split-cross-attention")],
)
def test_attention_flag(tmp_path: Path, attention: str, flag: str) -> None:
    cmd = build_command(make_settings(tmp_path, attention=attention), memory=NO_LIMIT)
    assert flag in cmd
    assert "--use-pytorch-cross-attention" not in cmd


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
