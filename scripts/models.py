#!/usr/bin/env python3
"""Put the model files of the worker's tasks on a network volume, or lay them out for a repository
of your own: download, continue, verify.

    pip install huggingface_hub==2.4.0
    python scripts/models.py --volume /workspace --task i2v     # the i2v task's files, its 4-step LoRAs too
    python scripts/models.py --volume /workspace --task i2v --speed default   # without the 4-step LoRAs
    python scripts/models.py --volume /workspace --dry-run      # every task: what would be fetched, sizes
    python scripts/models.py --volume /workspace --check        # present? right size? right SHA-256?
    python scripts/models.py --layout hf-upload --out up --task i2v   # for `hf upload <you>/<repo> up .`

The files are the tasks' model specs (worker/tasks: ComfyUI folder, default name, the MODEL_*
variable that renames it, where the Hugging Face Hub publishes it). Names come from the
environment exactly as the worker reads them. With ``--layout volume`` (the default) each file goes
to <volume>/models/<folder>/<name> (the name may hold a subfolder), or stays where ComfyUI already
finds it (models/unet, models/clip); ``--check`` also accepts a file in the volume's Hugging Face
cache (RunPod's cached model, <volume>/huggingface-cache/hub), the copy the worker then loads.
With ``--layout hf-upload`` each file goes to <out>/split_files/<folder>/<name>, Comfy-Org's
repackaged layout, which the worker finds in a cached model. A file several tasks share is
fetched once; every file is checked against the Hub's size and SHA-256 (scripts/hub_files.py).

``--dry-run`` works without the Hub, or without huggingface_hub: it then gives the sizes the Hub's
file pages show (:data:`PUBLISHED_SIZES`) instead of the exact ones. Docs: docs/deployment.md.

Exit codes: 0 done (--check: every file is right); 1 a file is missing or wrong (--check), or a
download failed; 2 bad arguments or configuration, or the Hub refused or could not be reached;
130 interrupted (partial files stay and the next run continues them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from comfy_bootstrap import hf_cache  # noqa: E402
from comfy_bootstrap.models import VOLUME_SUBDIRS, ModelFile  # noqa: E402
from scripts.hub_files import (  # noqa: E402
    HUB_IMPORT_ERROR,
    NEEDS_HUB,
    DownloadError,
    HubAccessError,
    Place,
    Wanted,
    continues_download,
    describe_remote,
    download,
    has_token,
    hub_endpoint,
    part_path,
    verify,
)
from worker.model_files import human_size  # noqa: E402
from worker.settings import ConfigError, Settings  # noqa: E402
from worker.tasks import REGISTRY, SPEED_NAMES, TASK_NAMES  # noqa: E402
from worker.tasks.base import DEFAULT_SPEED, ModelSpec, Task  # noqa: E402

EXIT_OK, EXIT_WRONG, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_REPACKAGED = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"

#: The size each file's page on the Hub shows (decimal, rounded; the Wan 2.2 VAE's is the size of
#: the file ComfyUI builds from its config, RIFE 4.26's an estimate: 5.7 M parameters in fp32; SDPose's the size of a public copy of the same file): --dry-run's figures when the Hub cannot be asked, and
#: the sizes docs/deployment.md gives (tests/test_models_script.py keeps them equal).
PUBLISHED_SIZES: dict[str, int] = {
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": 14_300_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors": 14_300_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": 14_300_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": 14_300_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors": 10_000_000_000,
    f"{_REPACKAGED}/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": 6_700_000_000,
    f"{_REPACKAGED}/split_files/vae/wan_2.1_vae.safetensors": 250_000_000,
    f"{_REPACKAGED}/split_files/vae/wan2.2_vae.safetensors": 1_400_000_000,
    "Kijai/WanVideo_comfy/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors": 320_000_000,
    f"{_REPACKAGED}/split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors": 1_200_000_000,
    f"{_REPACKAGED}/split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors": 1_200_000_000,
    f"{_REPACKAGED}/split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": 1_200_000_000,
    f"{_REPACKAGED}/split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": 1_200_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors": 15_270_000_000,
    f"{_REPACKAGED}/split_files/audio_encoders/wav2vec2_large_english_fp16.safetensors": 631_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_fun_control_high_noise_14B_fp8_scaled.safetensors": 14_300_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_fun_control_low_noise_14B_fp8_scaled.safetensors": 14_300_000_000,
    f"{_REPACKAGED}/split_files/diffusion_models/wan2.2_animate_14B_bf16.safetensors": 34_500_000_000,
    "Comfy-Org/Wan_2.1_ComfyUI_repackaged/split_files/clip_vision/clip_vision_h.safetensors": 1_260_000_000,
    "Kijai/WanVideo_comfy/LoRAs/Wan22_relight/WanAnimate_relight_lora_fp16.safetensors": 1_440_000_000,
    "Comfy-Org/frame_interpolation/frame_interpolation/rife_v4.26.safetensors": 23_000_000,
    "Comfy-Org/frame_interpolation/frame_interpolation/film_net_fp16.safetensors": 68_900_000,
    "Comfy-Org/SDPose/checkpoints/sdpose_wholebody_fp16.safetensors": 1_920_000_000,
    "Comfy-Org/sam3.1/checkpoints/sam3.1_multiplex_fp16.safetensors": 1_750_000_000,
}

#: Where a file of a ComfyUI folder goes under the target, by --layout. The first place is where a
#: download lands; the others are where the worker also finds it (ComfyUI's older folder names).
LAYOUTS: dict[str, Callable[[Path, str, str], list[Path]]] = {
    "volume": lambda root, folder, name: [root / sub / name for sub in VOLUME_SUBDIRS[folder]],
    "hf-upload": lambda root, folder, name: [root / "split_files" / folder / name],
}


@dataclass(frozen=True)
class Target:
    """Where the files go: a volume (``models/…``) or a folder laid out for a Hugging Face repository."""

    layout: str
    root: Path
    #: Only for --check of a volume: the files its Hugging Face cache holds, by (folder, name).
    cached: dict[tuple[str, str], hf_cache.Found] | None = None

    def places(self, want: Wanted) -> list[Path]:
        return LAYOUTS[self.layout](self.root, want.folder, want.name)

    def fix_command(self, tasks: Iterable[str]) -> str:
        where = f"--volume {self.root}" if self.layout == "volume" else f"--layout {self.layout} --out {self.root}"
        flags = " ".join(f"--task {task}" for task in dict.fromkeys(tasks))
        return f"python scripts/models.py {where} {flags}".rstrip()


# ---- what to fetch, and where it is ---------------------------------------------------------------
def wanted_files(settings: Settings, tasks: Sequence[str], speeds: Sequence[str] | None = None) -> list[Wanted]:
    """Every file the tasks load at the given speeds (None: all of them), once, with the names
    configured by the MODEL_* variables."""
    files: dict[tuple[str, str], Wanted] = {}
    for task in tasks:
        for spec in _task_specs(REGISTRY[task], speeds):
            name = settings.model_names[spec.env]
            if spec.source is None:
                print(f"note: {spec.label} {name!r} ({spec.env}) has no known Hub source: put it in models/{spec.folder} yourself")
                continue
            want = files.setdefault((spec.folder, name), Wanted(spec.folder, name, spec.label, spec.env, spec.source))
            if want.source != spec.source:
                raise ConfigError(f"models/{spec.folder}/{name} would be both {want.origin} and {spec.source.repo}/{spec.source.path}")
            if task not in want.tasks:
                want.tasks.append(task)
    return list(files.values())


def _task_specs(task: Task, speeds: Sequence[str] | None) -> list[ModelSpec]:
    if speeds is None:
        return list(task.all_specs)
    chosen = [task.specs(speed) for speed in speeds if speed == DEFAULT_SPEED or speed in task.speeds]
    return list(dict.fromkeys(spec for specs in chosen for spec in specs))


def size_of(want: Wanted) -> int:
    """The Hub's size when it was asked, else the published one."""
    return want.remote.size if want.remote else PUBLISHED_SIZES[want.origin]


def cached_files(settings: Settings, files: Sequence[Wanted]) -> dict[tuple[str, str], hf_cache.Found]:
    """The files the volume's Hugging Face cache holds (MODEL_REPO pins the repository), as the worker finds them."""
    comfy = settings.comfy
    pin = hf_cache.RepoPin.parse(comfy.model_repo) if comfy.model_repo else None
    sought = [hf_cache.Sought(ModelFile(w.folder, w.name), (w.source.repo, w.source.path)) for w in files]
    found = hf_cache.search(comfy.hf_cache_dir, sought, pin).found
    return {(f.file.folder, f.file.name): f for f in found}


def where(target: Target, want: Wanted) -> Place:
    places = target.places(want)
    found = next((path for path in places if path.is_file()), None)
    path = found or places[0]
    part = part_path(path, want.remote) if want.remote else path.with_name(f"{path.name}.part")
    return Place(path, found.stat().st_size if found else None, part, part.stat().st_size if part.is_file() else 0)


def plan(want: Wanted, local: Place) -> tuple[str, str]:
    """What a download run does with a file (``present``, ``resume``, ``replace``, ``fetch``) and why."""
    if want.remote is None:
        return ("present", "not checked: the Hub's size and SHA-256 are needed") if local.exists else ("fetch", "")
    size = want.remote.size
    if local.size == size:
        return "present", "the Hub's size; its SHA-256 is checked before it counts as done"
    if local.part_size and local.part_size <= size:
        return "resume", f"{human_size(local.part_size)} of {human_size(size)} downloaded in {local.part.name}"
    if local.exists and continues_download(local.path, size):
        return "resume", f"{human_size(local.size)} of {human_size(size)} there: a download cut short"
    if local.exists:
        return "replace", f"the file there is {human_size(local.size)}, the Hub's is {human_size(size)}"
    return "fetch", ""


# ---- the three modes ------------------------------------------------------------------------------
def show(want: Wanted, path: Path, status: str, why: str = "", *, verb: str = "to  ") -> None:
    print(f"{status:<8} {want.name}  {human_size(size_of(want))}  ({want.label}; {', '.join(want.tasks)})")
    print(f"{'':<8}   from {want.origin}")
    print(f"{'':<8}   {verb} {path}")
    if why:
        print(f"{'':<8}   {why}")


def show_plan(want: Wanted, target: Target) -> tuple[Place, str]:
    """Where the file is or goes and what to do with it, printed; (place, action)."""
    local = where(target, want)
    action, why = plan(want, local)
    show(want, local.path, action, why)
    return local, action


def dry_run(files: Sequence[Wanted], target: Target) -> int:
    to_fetch = 0
    for want in files:
        local, action = show_plan(want, target)
        if action != "present":
            to_fetch += size_of(want) - (local.part_size if action == "resume" and local.part_size else 0)
    total = sum(size_of(w) for w in files)
    figures = "" if all(w.remote for w in files) else " (the sizes the Hub's pages show)"
    print(f"\n{len(files)} files, {total / 1e9:.2f} GB in all; to download: {to_fetch / 1e9:.2f} GB{figures}. Dry run: nothing was written.")
    return EXIT_OK


def check_one(want: Wanted, target: Target) -> str:
    """Verify the copy the worker would load (a cached model's first), print it; its status."""
    cached = (target.cached or {}).get((want.folder, want.name))
    if cached is not None:
        problem = verify(cached.path, want)
        status = "ok" if problem is None else "wrong"
        show(want, cached.path, status, f"in the cached model {cached.snapshot}" + (f": it is {problem}" if problem else ""), verb="at  ")
        return status
    local = where(target, want)
    if not local.exists:
        why = f"expected at {' or '.join(map(str, target.places(want)))}"
        if target.cached is not None:
            why += f", or in the Hugging Face cache {target.root / 'huggingface-cache' / 'hub'}"
        if local.part_size:
            why += f"; {human_size(local.part_size)} of it downloaded in {local.part}"
        show(want, local.path, "missing", why)
        return "missing"
    problem = verify(local.path, want)
    show(want, local.path, "ok" if problem is None else "wrong", "" if problem is None else f"it is {problem}")
    return "ok" if problem is None else "wrong"


def check(files: Sequence[Wanted], target: Target) -> int:
    bad = [want for want in files if check_one(want, target) != "ok"]
    if not bad:
        print(f"\nall {len(files)} files are present with the Hub's size and SHA-256")
        return EXIT_OK
    print(f"\n{len(bad)} of {len(files)} files missing or wrong: {', '.join(w.name for w in bad)}")
    print(f"fix: {target.fix_command(t for w in bad for t in w.tasks)}")
    return EXIT_WRONG


def fetch(files: Sequence[Wanted], target: Target, endpoint: str) -> int:
    failed: list[str] = []
    downloaded = 0
    started = time.monotonic()
    for want in files:
        local, action = show_plan(want, target)
        try:
            if action == "present":
                problem = verify(local.path, want)
                if problem is None:
                    print(f"{'':<8}   ok")
                    continue
                print(f"{'':<8}   it is {problem}: downloading it again")
                action = "replace"
            download(want, local, action, endpoint)
        except DownloadError as exc:
            print(f"{'':<8}   FAILED: {exc}")
            failed.append(str(exc))
            continue
        downloaded += want.remote.size
        print(f"{'':<8}   ok: size and {'SHA-256' if want.remote.sha256 else 'git blob id'} match the Hub's")
    minutes = (time.monotonic() - started) / 60
    if failed:
        print(f"\n{len(failed)} of {len(files)} files failed:")
        for message in failed:
            print(f"- {message}")
        return EXIT_WRONG
    under = target.root / "models" if target.layout == "volume" else target.root
    print(f"\nall {len(files)} files are in place under {under} ({downloaded / 1e9:.2f} GB downloaded in {minutes:.1f} min)")
    if target.layout == "hf-upload":
        print(f"upload them to a repository of yours, then name it as the endpoint's cached model: hf upload <you>/<repo> {target.root} .")
    return EXIT_OK


# ---- the command line -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/models.py",
        description="Download the model files of the worker's tasks onto a network volume (or into a folder laid out "
        "for a Hugging Face repository of your own), and check them.",
        epilog="HF_TOKEN: a Hugging Face token for gated repositories (never printed). MODEL_*: the file names, as the "
        "worker reads them. MODEL_REPO: the one repository of the volume's Hugging Face cache --check looks in.",
    )
    parser.add_argument(
        "--volume",
        type=Path,
        default=Path(os.environ.get("VOLUME_PATH") or "/runpod-volume"),
        help="the volume holding models/ (default: $VOLUME_PATH or /runpod-volume; on a pod usually /workspace)",
    )
    parser.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default="volume",
        help="volume: <volume>/models/<folder>/<name> (default); hf-upload: <out>/split_files/<folder>/<name>, "
        "for a repository of your own to name as an endpoint's cached model",
    )
    parser.add_argument("--out", type=Path, help="the folder --layout hf-upload fills")
    parser.add_argument("--task", action="append", choices=(*TASK_NAMES, "all"), help="a task whose files to fetch; repeat for several (default: all)")
    parser.add_argument(
        "--speed",
        action="append",
        choices=(DEFAULT_SPEED, *SPEED_NAMES, "all"),
        help="the job speeds to fetch files for; repeat for several (default: all; "
        f"{DEFAULT_SPEED} alone leaves out the speed presets' LoRAs)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only verify the files (present, size, SHA-256); exit 1 if anything is off")
    mode.add_argument("--dry-run", action="store_true", help="only list what would be fetched, from where, to where, and the sizes")
    args = parser.parse_args(argv)
    if (args.layout == "hf-upload") != (args.out is not None):
        parser.error("--out DIR goes with --layout hf-upload (and --layout hf-upload needs --out DIR)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = TASK_NAMES if not args.task or "all" in args.task else tuple(dict.fromkeys(args.task))
    speeds = None if not args.speed or "all" in args.speed else args.speed
    try:
        settings = Settings.from_env({**os.environ, "VOLUME_PATH": str(args.volume)})
        files = wanted_files(settings, tasks, speeds)
    except ConfigError as exc:
        print(f"configuration error: {exc}")
        return EXIT_USAGE
    root = args.out if args.layout == "hf-upload" else settings.comfy.volume_path
    target = Target(args.layout, root)
    if HUB_IMPORT_ERROR is not None:
        print(f"{NEEDS_HUB} ({HUB_IMPORT_ERROR})")
        return offline_dry_run(files, target) if args.dry_run else EXIT_USAGE
    endpoint = hub_endpoint()
    print(f"{args.layout} {root}; tasks {', '.join(tasks)}; Hub {endpoint} ({'with a token' if has_token() else 'no token'})\n")
    try:
        describe_remote(files, endpoint)
    except HubAccessError as exc:
        print(f"{'note' if args.dry_run else 'error'}: {exc}")
        return offline_dry_run(files, target) if args.dry_run else EXIT_USAGE
    try:
        if args.dry_run:
            return dry_run(files, target)
        if args.check:
            cached = cached_files(settings, files) if args.layout == "volume" else None
            return check(files, Target(args.layout, root, cached))
        return fetch(files, target, endpoint)
    except KeyboardInterrupt:
        print("\ninterrupted: partial downloads stay (*.part beside each file); run the same command again to continue")
        return EXIT_INTERRUPTED


def offline_dry_run(files: Sequence[Wanted], target: Target) -> int:
    print("without the Hub: the sizes its file pages show, not checked against it; run again with it for exact figures\n")
    return dry_run(files, target)


if __name__ == "__main__":
    sys.exit(main())
