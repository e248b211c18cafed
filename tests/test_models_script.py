"""scripts/models.py against a stand-in Hugging Face Hub on 127.0.0.1 (tests/fake_hub.py).

Every model file of every task is served as a few KB of random bytes in a valid safetensors
file, under its real repository and path, so the script's plan is the real one. The script runs
in this process (``main(argv)``) except where the command line itself matters (Ctrl-C, a machine
without huggingface_hub).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants, file_download

from comfy_bootstrap import hf_cache
from comfy_bootstrap.models import ModelFile
from tests.fake_hub import FakeHub, HubEntry, fill_cache
from tests.harness import REPO
from tests.test_safetensors import safetensors_file
from worker.tasks import REGISTRY

SCRIPT = REPO / "scripts" / "models.py"
_spec = importlib.util.spec_from_file_location("wan22_models", SCRIPT)
models = importlib.util.module_from_spec(_spec)
sys.modules["wan22_models"] = models
_spec.loader.exec_module(models)

TOKEN = "hf_fakeTokenThatMustNeverBePrinted0123"
#: huggingface_hub writes what it receives in chunks of DOWNLOAD_CHUNK_SIZE (10 MB): a connection
#: lost mid-chunk loses that chunk. The test files are a few KB, so their chunks are 250 bytes.
CHUNK = 250
#: (folder, default name) → (repo, path) of every file of every task and speed, in 2 repositories.
SPECS = {(s.folder, s.default): (s.source.repo, s.source.path) for t in REGISTRY.values() for s in t.all_specs}


def content_for(index: int) -> bytes:
    return safetensors_file({f"blocks.{i}.weight": (350 + 150 * index,) for i in range(3)}, seed=index)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    files = {source: HubEntry(content_for(i)) for i, source in enumerate(dict.fromkeys(SPECS.values()))}
    with FakeHub(files) as server:
        yield server


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """The environment of a run: the fake Hub, a private HF home, no token, no worker variables."""
    for name in list(os.environ):
        if name.startswith(("MODEL_", "HF_", "HUGGING_FACE_")) or name in ("VOLUME_PATH", "TASKS"):
            monkeypatch.delenv(name)
    values = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(file_download.time, "sleep", lambda seconds: None)  # huggingface_hub's pause between retries
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    return values


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    return tmp_path / "volume"


def run(volume: Path, *args: str) -> int:
    return models.main(["--volume", str(volume), *args])


def entry(hub: FakeHub, folder: str, name: str) -> HubEntry:
    return hub.files[SPECS[(folder, name)]]


def target(volume: Path, folder: str, name: str) -> Path:
    return volume / "models" / folder / name


def task_files(task: str) -> list[tuple[str, str]]:
    return [(s.folder, s.default) for s in REGISTRY[task].all_specs]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def blob_gets(hub: FakeHub) -> list[str]:
    return [r.path.split("?")[0].rsplit("/", 1)[-1] for r in hub.seen("cdn", "GET")]


# ---- downloading ---------------------------------------------------------------------------------
def test_one_task_lands_in_the_volume_layout_with_the_hubs_bytes(hub: FakeHub, env, volume: Path, capsys) -> None:
    assert run(volume, "--task", "i2v") == 0
    out = capsys.readouterr().out
    assert files_under(volume) == sorted(
        [
            "models/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
            "models/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
            "models/frame_interpolation/film_net_fp16.safetensors",
            "models/frame_interpolation/rife_v4.26.safetensors",
            "models/loras/wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",
            "models/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
            "models/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
            "models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
            "models/vae/wan_2.1_vae.safetensors",
        ]
    )
    for folder, name in task_files("i2v"):
        assert target(volume, folder, name).read_bytes() == entry(hub, folder, name).content
    assert out.count("ok: size and SHA-256 match the Hub's") == 9
    assert "from Kijai/WanVideo_comfy/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors" in out
    assert f"all 9 files are in place under {volume / 'models'}" in out

    # A second run finds everything in place: it checks, and downloads nothing.
    hub.requests.clear()
    assert run(volume, "--task", "i2v") == 0
    assert capsys.readouterr().out.count("present ") == 9 and blob_gets(hub) == []


def test_speed_default_leaves_the_speed_presets_loras_out(hub: FakeHub, env, volume: Path, capsys) -> None:
    assert run(volume, "--task", "i2v", "--task", "t2v", "--speed", "default") == 0
    assert not any("4steps" in name for name in files_under(volume))
    assert "all 9 files are in place" in capsys.readouterr().out  # 2 + 2 experts, text encoder, VAE, lightx2v LoRA, RIFE, FILM
    assert run(volume, "--task", "t2v", "--speed", "4step") == 0  # adds the T2V 4-step LoRAs, nothing else
    out = capsys.readouterr().out
    assert out.count("present ") == 6 and out.count("ok: size and SHA-256 match the Hub's") == 2
    assert "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors" in out
    assert "split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors" in out
    assert not any("i2v_lightx2v_4steps" in name for name in files_under(volume))


def test_a_file_several_tasks_share_is_fetched_once(hub: FakeHub, env, volume: Path, capsys) -> None:
    assert run(volume, "--task", "i2v", "--task", "t2v", "--task", "flf2v") == 0
    gets = blob_gets(hub)
    assert len(gets) == len(set(gets)) == 13  # 2 + 2 experts, text encoder, VAE, LoRA, RIFE, FILM, 2 + 2 4-step LoRAs
    assert "text encoder; i2v, t2v, flf2v)" in capsys.readouterr().out


def test_model_variables_rename_and_move_files_as_the_worker_reads_them(hub: FakeHub, env, volume: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODEL_LORA", "mine/distill.safetensors")
    monkeypatch.setenv("MODEL_TI2V_5B_VAE", "wan22/vae.safetensors")
    assert run(volume, "--task", "ti2v-5b", "--task", "i2v") == 0
    lora = entry(hub, "loras", "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors")
    assert (volume / "models/loras/mine/distill.safetensors").read_bytes() == lora.content
    assert (volume / "models/vae/wan22/vae.safetensors").read_bytes() == entry(hub, "vae", "wan2.2_vae.safetensors").content
    assert not (volume / "models/loras/wan").exists()


def test_a_file_in_the_legacy_folder_counts_and_is_not_fetched_again(hub: FakeHub, env, volume: Path) -> None:
    name = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    legacy = target(volume, "clip", name)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(entry(hub, "text_encoders", name).content)
    assert run(volume, "--task", "t2v") == 0
    assert not target(volume, "text_encoders", name).exists()
    assert hashlib.sha256(entry(hub, "text_encoders", name).content).hexdigest() not in blob_gets(hub)


# ---- --dry-run and --check -----------------------------------------------------------------------
def test_dry_run_lists_what_from_where_to_where_and_the_sizes_and_writes_nothing(hub: FakeHub, env, volume: Path, capsys) -> None:
    assert run(volume, "--dry-run") == 0
    out = capsys.readouterr().out
    total = sum(len(e.content) for e in hub.files.values())
    for (folder, name), (repo, path) in SPECS.items():
        size = models.human_size(len(hub.files[(repo, path)].content))
        assert f"fetch    {name}  {size}  (" in out
        assert f"from {repo}/{path}\n" in out and f"to   {target(volume, folder, name)}\n" in out
    assert f"{len(SPECS)} files, {total / 1e9:.2f} GB in all; to download: {total / 1e9:.2f} GB. Dry run: nothing was written." in out
    assert not volume.exists() and hub.seen("cdn") == [] and hub.seen("hub", "HEAD") == []


def test_dry_run_tells_present_partial_and_wrong_files_apart(hub: FakeHub, env, volume: Path, capsys) -> None:
    assert run(volume, "--task", "i2v") == 0
    high, low, vae = task_files("i2v")[0], task_files("i2v")[1], task_files("i2v")[3]
    target(volume, *high).write_bytes(entry(hub, *high).content[:1000])  # a download cut short
    target(volume, *low).write_bytes(b"<!DOCTYPE html><html>Sign in</html>")
    target(volume, *vae).unlink()
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (volume / "models").rglob("*")}
    assert run(volume, "--task", "i2v", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"resume   {high[1]}" in out and f"1.0 KB of {models.human_size(len(entry(hub, *high).content))} there" in out
    assert f"replace  {low[1]}" in out and "the file there is 35 bytes" in out
    assert f"fetch    {vae[1]}" in out and out.count("present  ") == 6
    assert {p: p.stat().st_mtime_ns for p in (volume / "models").rglob("*")} == before


def test_check_passes_on_a_good_volume(hub: FakeHub, env, volume: Path, capsys) -> None:
    assert run(volume) == 0
    capsys.readouterr()
    hub.requests.clear()
    assert run(volume, "--check") == 0
    assert capsys.readouterr().out.count("ok       ") == len(SPECS) and hub.seen("cdn") == []


def test_check_names_a_corrupt_and_a_missing_file_and_the_command_that_fixes_them(hub: FakeHub, env, volume: Path, capsys) -> None:
    assert run(volume, "--task", "i2v", "--task", "ti2v-5b") == 0
    (folder, name), vae = task_files("ti2v-5b")[0], task_files("i2v")[3]
    corrupt = target(volume, folder, name)
    data = bytearray(corrupt.read_bytes())
    data[-1] ^= 0xFF  # same size, one bit flipped
    corrupt.write_bytes(bytes(data))
    target(volume, *vae).unlink()
    capsys.readouterr()
    assert run(volume, "--task", "i2v", "--task", "ti2v-5b", "--check") == 1
    out = capsys.readouterr().out
    actual, expected = hashlib.sha256(data).hexdigest(), entry(hub, folder, name).sha256
    assert f"wrong    {name}" in out and f"it is SHA-256 {actual}, the Hub's is {expected}" in out
    assert f"missing  {vae[1]}" in out and f"expected at {target(volume, *vae)}" in out
    assert f"2 of 11 files missing or wrong: {vae[1]}, {name}" in out
    assert f"fix: python scripts/models.py --volume {volume} --task i2v --task ti2v-5b" in out
    assert run(volume, "--task", "i2v", "--task", "ti2v-5b") == 0  # the fix works
    assert corrupt.read_bytes() == entry(hub, folder, name).content


def test_check_accepts_the_volumes_hugging_face_cache_and_checks_the_copy_the_worker_loads(
    hub: FakeHub, env, volume: Path, capsys
) -> None:
    """RunPod's cached model: the i2v files only in <volume>/huggingface-cache/hub, laid out by huggingface_hub."""
    cache = volume / "huggingface-cache" / "hub"
    links = fill_cache(hub, cache, [SPECS[file] for file in task_files("i2v")])
    assert run(volume, "--task", "i2v", "--check") == 0
    out = capsys.readouterr().out
    assert out.count("ok       ") == 9 and "all 9 files are present with the Hub's size and SHA-256" in out
    assert f"at   {links[0]}\n" in out and "in the cached model Comfy-Org/Wan_2.2_ComfyUI_Repackaged@0123456789ab (main)" in out
    assert not (volume / "models").exists()

    wrong = target(volume, *task_files("i2v")[3])  # the volume's VAE is wrong, the cache's is loaded and right
    wrong.parent.mkdir(parents=True)
    wrong.write_bytes(b"not the vae")
    blob = Path(os.path.realpath(links[0]))  # the cached expert's blob, changed in place
    blob.write_bytes(b"x" + blob.read_bytes()[1:])
    assert run(volume, "--task", "i2v", "--check") == 1
    out = capsys.readouterr().out
    assert f"wrong    {task_files('i2v')[0][1]}" in out and "1 of 9 files missing or wrong" in out
    assert f"ok       {task_files('i2v')[3][1]}" in out


def test_hf_upload_lays_out_verified_files_the_worker_finds_as_a_cached_model(hub: FakeHub, env, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "upload"
    assert models.main(["--layout", "hf-upload", "--out", str(out_dir), "--task", "i2v", "--speed", "default"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok: size and SHA-256 match the Hub's") == 7
    assert f"hf upload <you>/<repo> {out_dir} ." in out
    assert files_under(out_dir) == sorted(
        f"split_files/{folder}/{name}" for folder, name in task_files("i2v") if "4steps" not in name
    )
    assert models.main(["--layout", "hf-upload", "--out", str(out_dir), "--task", "i2v", "--speed", "default", "--check"]) == 0
    # Uploaded as is and cached by RunPod, the folder is a snapshot: the worker finds every file in it.
    snapshot = tmp_path / "hub" / hf_cache.repo_folder("me/wan22-i2v") / "snapshots" / ("a" * 40)
    snapshot.parent.mkdir(parents=True)
    out_dir.rename(snapshot)
    wanted = [hf_cache.Sought(ModelFile(folder, name)) for folder, name in task_files("i2v") if "4steps" not in name]
    result = hf_cache.search(tmp_path / "hub", wanted, hf_cache.RepoPin.parse("me/wan22-i2v"))
    assert len(result.found) == 7 and result.missing == ()
    assert all(f.path.read_bytes() == entry(hub, f.file.folder, f.file.name).content for f in result.found)


def test_hf_upload_needs_its_folder(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        models.main(["--layout", "hf-upload"])
    assert exit_.value.code == 2 and "--out DIR goes with --layout hf-upload" in capsys.readouterr().err


# ---- resuming ------------------------------------------------------------------------------------
def test_a_download_cut_off_is_continued_by_the_next_run_with_the_same_hash(hub: FakeHub, env, volume: Path, capsys) -> None:
    folder, name = task_files("i2v")[0]
    want = entry(hub, folder, name)
    # The first GET stops after 1000 bytes; the next six (huggingface_hub retries 5 times) send nothing.
    hub.fault(("drop", 1000), *[("drop", 0)] * 6)
    assert run(volume, "--task", "i2v") == 1
    out = capsys.readouterr().out
    part = target(volume, folder, f"{name}.{want.sha256[:12]}.part")
    assert f"{name}: the download stopped at 1.0 KB of {models.human_size(len(want.content))}" in out
    assert f"run the same command again to continue it from {part.name}" in out
    assert part.read_bytes() == want.content[:1000] and not target(volume, folder, name).exists()

    hub.requests.clear()
    assert run(volume, "--task", "i2v") == 0
    assert [r.headers.get("range") for r in hub.seen("cdn", "GET")] == ["bytes=1000-"]
    assert target(volume, folder, name).read_bytes() == want.content and not part.exists()


def test_a_connection_dropped_once_is_continued_within_the_run(hub: FakeHub, env, volume: Path) -> None:
    folder, name = task_files("t2v")[0]
    hub.fault(("drop", 1500))
    assert run(volume, "--task", "t2v") == 0
    assert [r.headers.get("range") for r in hub.seen("cdn", "GET")][:2] == [None, "bytes=1500-"]
    assert target(volume, folder, name).read_bytes() == entry(hub, folder, name).content


def test_a_file_cut_short_under_its_final_name_is_continued(hub: FakeHub, env, volume: Path) -> None:
    """What an interrupted ``curl -C -`` leaves, and what the worker's models_invalid error points at."""
    folder, name = task_files("i2v")[1]
    path = target(volume, folder, name)
    path.parent.mkdir(parents=True)
    path.write_bytes(entry(hub, folder, name).content[:2048])
    assert run(volume, "--task", "i2v") == 0
    ranges = {r.path.split("?")[0].rsplit("/", 1)[-1]: r.headers.get("range") for r in hub.seen("cdn", "GET")}
    assert ranges[hashlib.sha256(entry(hub, folder, name).content).hexdigest()] == "bytes=2048-"
    assert path.read_bytes() == entry(hub, folder, name).content


def test_an_html_page_under_the_final_name_is_replaced_by_a_fresh_download(hub: FakeHub, env, volume: Path) -> None:
    folder, name = task_files("i2v")[2]
    path = target(volume, folder, name)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>")
    assert run(volume, "--task", "i2v") == 0
    assert path.read_bytes() == entry(hub, folder, name).content
    assert all(r.headers.get("range") is None for r in hub.seen("cdn", "GET"))


def test_ctrl_c_keeps_the_partial_file_and_the_command_continues_it(hub: FakeHub, env, volume: Path) -> None:
    folder, name = task_files("ti2v-5b")[0]
    want = entry(hub, folder, name)
    part = target(volume, folder, f"{name}.{want.sha256[:12]}.part")
    hub.fault(("stall", 1250))
    # The script as a program, with huggingface_hub's chunks as small as in this module's other tests.
    launch = f"import runpy, sys; from huggingface_hub import constants; constants.DOWNLOAD_CHUNK_SIZE = {CHUNK}; "
    launch += "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    command = [sys.executable, "-c", launch, str(SCRIPT), "--volume", str(volume), "--task", "ti2v-5b"]
    proc = subprocess.Popen(command, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert hub.stalled.wait(15), "the download did not start"
        deadline = time.monotonic() + 10
        while not (part.exists() and part.stat().st_size == 1250) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
        hub.release.set()
    assert proc.returncode == 130, out
    assert "interrupted: partial downloads stay" in out
    assert part.read_bytes() == want.content[:1250] and not target(volume, folder, name).exists()

    result = subprocess.run(command, env={**os.environ}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bytes=1250-" in [r.headers.get("range") for r in hub.seen("cdn", "GET")]
    assert target(volume, folder, name).read_bytes() == want.content and not part.exists()


# ---- refusing what does not match ----------------------------------------------------------------
def test_content_that_does_not_match_the_hubs_sha256_is_refused_and_not_kept(hub: FakeHub, env, volume: Path, capsys) -> None:
    folder, name = task_files("i2v")[3]
    bad = entry(hub, folder, name)
    bad.sha256 = "ab" * 32  # the Hub advertises another file than it serves
    assert run(volume, "--task", "i2v") == 1
    out = capsys.readouterr().out
    actual = hashlib.sha256(bad.content).hexdigest()
    assert f"{name}: the download from {SPECS[(folder, name)][0]}/{SPECS[(folder, name)][1]} is SHA-256 {actual}, the Hub's is {'ab' * 32}" in out
    assert "it was deleted" in out and "1 of 9 files failed" in out
    assert [p for p in target(volume, folder, name).parent.iterdir()] == []
    assert target(volume, *task_files("i2v")[0]).exists()  # the other files still arrived


def test_a_file_kept_in_git_is_checked_by_its_git_blob_id(hub: FakeHub, env, volume: Path, capsys) -> None:
    folder, name = task_files("i2v")[4]
    entry(hub, folder, name).lfs = False
    assert run(volume, "--task", "i2v") == 0
    assert "ok: size and git blob id match the Hub's" in capsys.readouterr().out
    assert target(volume, folder, name).read_bytes() == entry(hub, folder, name).content


# ---- the token -----------------------------------------------------------------------------------
def test_the_token_goes_to_the_hub_only_and_is_never_printed(hub: FakeHub, env, volume: Path, monkeypatch, capfd) -> None:
    hub.gated, hub.token = {"Comfy-Org/Wan_2.2_ComfyUI_Repackaged", "Kijai/WanVideo_comfy"}, TOKEN
    assert run(volume, "--task", "i2v") == 2
    out = capfd.readouterr().out
    assert "error: Comfy-Org/Wan_2.2_ComfyUI_Repackaged is gated: accept its terms" in out and "no token: HF_TOKEN is not set" in out
    hub.requests.clear()

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert run(volume, "--task", "i2v") == 0
    assert run(volume, "--task", "i2v", "--check") == 0
    captured = capfd.readouterr()
    assert "(with a token)" in captured.out and TOKEN not in captured.out + captured.err
    hub_calls = [r for r in hub.seen("hub") if r.method in ("POST", "HEAD")]
    assert hub_calls and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub_calls)
    assert hub.seen("cdn") and all("authorization" not in r.headers for r in hub.seen("cdn"))

    monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenAlsoNeverPrinted")
    assert run(volume, "--task", "i2v", "--check") == 2
    captured = capfd.readouterr()
    assert "the token in use was refused" in captured.out and "hf_wrong" not in captured.out + captured.err


def test_an_unreachable_hub_fails_a_download_and_a_dry_run_lists_the_published_sizes(env, volume: Path, monkeypatch, capsys) -> None:
    from tests.harness import free_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert run(volume, "--task", "i2v") == 2
    assert "error: cannot reach the Hub at http://127.0.0.1:" in capsys.readouterr().out
    assert run(volume, "--dry-run", "--task", "ti2v-5b") == 0
    out = capsys.readouterr().out
    assert "note: cannot reach the Hub at http://127.0.0.1:" in out and "without the Hub: the sizes its file pages show" in out
    assert "fetch    wan2.2_ti2v_5B_fp16.safetensors  10.0 GB  (TI2V-5B diffusion model; ti2v-5b)" in out
    assert "5 files, 18.19 GB in all; to download: 18.19 GB (the sizes the Hub's pages show). Dry run: nothing was written." in out
    assert not volume.exists()


def test_every_file_has_a_published_size_and_the_deployment_table_shows_it() -> None:
    sources = {f"{s.source.repo}/{s.source.path}" for t in REGISTRY.values() for s in t.all_specs if s.source}
    assert set(models.PUBLISHED_SIZES) == sources
    table = (REPO / "docs" / "deployment.md").read_text().split("| File | Folder | Size |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:4] for line in table.splitlines()[2:]]  # file(s), folder, size
    for origin, size in models.PUBLISHED_SIZES.items():
        name = origin.rsplit("/", 1)[1]
        cell = next(size for files, _, size in rows if name.replace("low_noise", "high_noise") in files)
        shown = cell.strip().removeprefix("about ").removesuffix(" each").removesuffix(" GB")
        assert float(shown) * 1e9 == size, f"{name}: docs/deployment.md says {cell.strip()}, PUBLISHED_SIZES {size}"


# ---- what the script needs -----------------------------------------------------------------------
def test_a_fresh_clone_needs_nothing_but_huggingface_hub() -> None:
    """The worker modules the script imports need only the standard library (``python -S``: no
    site-packages at all); without huggingface_hub, ``--help`` and ``--dry-run`` work and a download
    says what to install."""
    imports = [sys.executable, "-S", "-c", "import worker.settings, worker.tasks, worker.model_files, worker.safetensors"]
    subprocess.run(imports, cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    help_text = subprocess.run([sys.executable, "-S", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert help_text.returncode == 0 and "--dry-run" in help_text.stdout
    result = subprocess.run([sys.executable, "-S", str(SCRIPT), "--task", "i2v"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout.startswith("huggingface_hub 2.x is needed: pip install huggingface_hub==2.4.0 (No module named 'httpx2')")
    dry = subprocess.run([sys.executable, "-S", str(SCRIPT), "--task", "i2v", "--dry-run", "--volume", "/nonexistent"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "fetch    wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors  14.3 GB" in dry.stdout
    assert "9 files, 38.36 GB in all" in dry.stdout


def test_a_huggingface_hub_whose_own_dependency_is_missing_is_named_with_the_fix(tmp_path: Path) -> None:
    """What a machine with huggingface_hub 1.x (built on httpx, not httpx2) or a broken install shows."""
    fake = tmp_path / "site" / "huggingface_hub"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import httpx3_not_installed\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run([sys.executable, str(SCRIPT), "--task", "i2v"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout.strip() == "huggingface_hub 2.x is needed: pip install huggingface_hub==2.4.0 (No module named 'httpx3_not_installed')"


def test_make_models_passes_the_volume_the_tasks_and_the_options() -> None:
    command = ["make", "-s", "-n", "models", "VOLUME=/workspace", "TASK=i2v,t2v", "MODELS_ARGS=--check"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    assert 'scripts/models.py --volume "/workspace" --task i2v --task t2v --check' in result.stdout
