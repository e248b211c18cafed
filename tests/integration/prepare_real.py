"""Write the files test_real_comfyui.py needs beyond the tiny models, onto its volume and ComfyUI.

    <comfy venv>/bin/python tests/integration/prepare_real.py --volume <volume> --comfy-dir <comfy>

Run it with ComfyUI's Python (it needs torch and safetensors), after the shared tiny-models scripts
(make_tiny_models.py and make_tiny_models_more.py, ``--out <volume>/models``) and after
comfy_bootstrap/install.sh. Under ``<volume>/models/loras/`` it writes:

- ``wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors``: the tiny LoRA where the
  worker's default ``MODEL_LORA`` looks;
- ``style/example_style_{high,low}.safetensors``: LoRAs that fit the I2V experts (copies of the tiny
  4-step LoRAs);
- ``style/mismatch.safetensors``: 21 tensors of which none fits (blocks 30/31, which the 2-block tiny
  models lack, and ``self_attn.qkv``, which no Wan model has), so ComfyUI logs ``lora key not loaded``
  for each;
- ``wan2.2_t2v_lightx2v_4steps_lora_v1.1_{high,low}_noise.safetensors``: the T2V 4-step names (the tiny
  T2V and I2V experts share one architecture, so the I2V 4-step LoRAs serve);
- ``wan/WanAnimate_relight_lora_fp16.safetensors``: task animate's relight LoRA (replace), a copy of
  the tiny distill LoRA;

For the media tasks it also makes sure the volume holds the stand-ins of the shared
``make_tiny_models_media.py`` (S2V, wav2vec2 large, Animate, CLIP vision H, the two Fun-Control
experts: the script is run with ``--comfyui <comfy> --only`` the missing ones), and writes two
random-weight models for ComfyUI's native ``FrameInterpolationModelLoader`` into
``models/frame_interpolation/`` under the names the worker loads by default:
``rife_v4.26.safetensors`` (ComfyUI's 5-block IFNet, the RIFE 4.2x layout) and
``film_net_fp16.safetensors`` (FILMNet's fixed config, fp16), and the SDPose checkpoint the pose
preprocessing loads, ``models/checkpoints/sdpose_wholebody_fp16.safetensors`` (a shallow SD2 UNet
with the heatmap head and a TAESD VAE: ``comfy_side.py``'s ``sdpose_state``), and the SAM 3.1
checkpoint the person mask needs, ``models/checkpoints/sam3.1_multiplex_fp16.safetensors`` (full size,
1.75 GB: ``sam3_state``). Every file written in this run is
then loaded with ComfyUI's own loader (``comfy_side.py check``, a subprocess in ComfyUI's Python),
which prints the model class ComfyUI detected; ``--check-all`` checks the kept ones too.

A file that is already right is left alone; every line of output says what happened to one file.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

TINY = "make_tiny_models.py"
TINY_MORE = "make_tiny_models_more.py"
DISTILL = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"
I2V_4STEP = "wan2.2_i2v_lightx2v_4steps_lora_v1_{}_noise.safetensors"
# destination under loras/ -> (source under loras/, the shared script that writes the source)
COPIES = {
    f"wan/{DISTILL}": (DISTILL, TINY),
    "style/example_style_high.safetensors": (I2V_4STEP.format("high"), TINY_MORE),
    "style/example_style_low.safetensors": (I2V_4STEP.format("low"), TINY_MORE),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": (I2V_4STEP.format("high"), TINY_MORE),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": (I2V_4STEP.format("low"), TINY_MORE),
    "wan/WanAnimate_relight_lora_fp16.safetensors": (DISTILL, TINY),
}
EXPERT = "diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
MISMATCH = "style/mismatch.safetensors"
MISMATCH_MODULES = [f"blocks.{block}.{name}" for block in (30, 31) for name in ("self_attn.q", "cross_attn.k", "ffn.0")]
MISMATCH_MODULES.append("blocks.0.self_attn.qkv")
LORA_RANK, DIM = 4, 128  # never applied, so any shape will do; these are the tiny experts'
COMFY_SIDE = Path(__file__).resolve().parent / "comfy_side.py"
SHARED_TINY = Path(__file__).resolve().parents[3] / "shared" / "tools" / "tiny-models"
# make_tiny_models_media.py's --only key -> (file under models/, how comfy_side.py checks it)
MEDIA = {
    "s2v": ("diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors", "diffusion_model"),
    "wav2vec2": ("audio_encoders/wav2vec2_large_english_fp16.safetensors", "audio_encoder"),
    "animate": ("diffusion_models/wan2.2_animate_14B_bf16.safetensors", "diffusion_model"),
    "clip_vision_h": ("clip_vision/clip_vision_h.safetensors", "clip_vision"),
    "fun_high": ("diffusion_models/wan2.2_fun_control_high_noise_14B_fp8_scaled.safetensors", "diffusion_model"),
    "fun_low": ("diffusion_models/wan2.2_fun_control_low_noise_14B_fp8_scaled.safetensors", "diffusion_model"),
}
# comfy_side.py write WHAT -> (file under models/, how comfy_side.py checks it)
WRITTEN = {"rife_ifnet5": ("frame_interpolation/rife_v4.26.safetensors", "frame_interpolation"),
           "film": ("frame_interpolation/film_net_fp16.safetensors", "frame_interpolation"),
           "sdpose": ("checkpoints/sdpose_wholebody_fp16.safetensors", "checkpoint"),
           "sam3.1": ("checkpoints/sam3.1_multiplex_fp16.safetensors", "checkpoint")}  # fmt: skip


def mismatch_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for module in MISMATCH_MODULES:
        key = f"diffusion_model.{module}"
        shapes |= {f"{key}.lora_down.weight": (LORA_RANK, DIM), f"{key}.lora_up.weight": (DIM, LORA_RANK), f"{key}.alpha": ()}
    return shapes


def random_tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Small random weights (finite, near-neutral outputs); biases 0, LoRA ``alpha`` = rank."""
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for key, shape in shapes.items():
        if key.endswith(".bias"):
            tensors[key] = torch.zeros(shape)
        elif key.endswith(".alpha"):
            tensors[key] = torch.tensor(float(LORA_RANK))
        else:
            tensors[key] = torch.randn(shape, generator=generator) * 0.01
    return tensors


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}


def has_shapes(path: Path, read: Callable[[Path], dict], want: dict[str, tuple[int, ...]]) -> bool:
    """Whether ``path`` holds exactly these tensor names and shapes; a file that will not load does not."""
    try:
        return path.is_file() and read(path) == want
    except Exception:
        return False


def fitting(lora: Path, expert_keys: set[str]) -> tuple[int, int]:
    """(tensors whose module has a weight in the expert, all tensors), the way ComfyUI maps LoRA keys."""
    keys = list(safetensors_shapes(lora))
    modules = [key.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0].removesuffix(".alpha") for key in keys]
    return sum(f"{module}.weight" in expert_keys for module in modules), len(keys)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    write(part)
    os.replace(part, path)


def comfy_side(comfy_dir: Path, *args: str) -> bool:
    """Run comfy_side.py in this (ComfyUI's) Python; its lines go straight to our output."""
    done = subprocess.run([sys.executable, str(COMFY_SIDE), "--comfy-dir", str(comfy_dir), *args],
                          capture_output=True, text=True)  # fmt: skip
    print(done.stdout, end="")
    if done.returncode and not done.stdout:
        print(done.stderr[-2000:], end="", file=sys.stderr)
    return done.returncode == 0


def prepare_media(models: Path, comfy_dir: Path, tiny_dir: Path, check_all: bool) -> None:
    """The media stand-ins (shared script), the native frame-interpolation models, SDPose and SAM 3.1, each checked by ComfyUI."""
    to_check: list[str] = []
    missing = [key for key, (name, _) in MEDIA.items() if not (models / name).is_file()]
    if missing:
        script = tiny_dir / "make_tiny_models_media.py"
        if not script.is_file():
            sys.exit(f"prepare_real: {script} not found: pass --tiny-models-dir (the shared tools/tiny-models folder)")
        cmd = [sys.executable, str(script), "--out", str(models), "--comfyui", str(comfy_dir), "--only", *missing]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode:
            sys.exit(f"prepare_real: {script.name} failed:\n{done.stdout[-3000:]}")
    for key, (name, kind) in MEDIA.items():
        written = key in missing
        print(f"wrote    {models / name} (make_tiny_models_media.py --only {key})" if written else f"kept     {models / name}")
        if written or check_all:
            to_check.append(f"{kind}={models / name}")
    for what, (name, kind) in WRITTEN.items():
        target = models / name
        kept = target.is_file()
        if kept:
            print(f"kept     {target} (random-weight {what})")
        elif not comfy_side(comfy_dir, "write", what, str(target)):
            sys.exit(f"prepare_real: could not write {target}")
        if check_all or not kept:
            to_check.append(f"{kind}={target}")
    if to_check and not comfy_side(comfy_dir, "check", *to_check):
        sys.exit("prepare_real: ComfyUI did not load every file cleanly (see the lines above)")


def prepare(volume: Path, comfy_dir: Path, tiny_dir: Path = SHARED_TINY, check_all: bool = False) -> None:
    models = volume / "models"
    loras = models / "loras"
    for source, script in [(EXPERT, TINY), *((f"loras/{source}", script) for source, script in COPIES.values())]:
        if not (models / source).is_file():
            sys.exit(f"prepare_real: {models / source} is missing: run the shared tiny-models {script} --out {models} first")

    with safe_open(str(models / EXPERT), framework="pt") as f:
        expert_keys = set(f.keys())
    for dest, (source, _) in COPIES.items():
        target, origin = loras / dest, loras / source
        if target.is_file() and filecmp.cmp(origin, target, shallow=False):
            print(f"kept     {target} (same bytes as {source})")
            continue
        atomic_write(target, lambda part, origin=origin: shutil.copyfile(origin, part))
        print(f"wrote    {target} (copy of {source})")

    target = loras / MISMATCH
    if has_shapes(target, safetensors_shapes, mismatch_shapes()):
        action = "kept    "
    else:
        atomic_write(target, lambda part: save_file(random_tensors(mismatch_shapes()), str(part)))
        action = "wrote   "
    fit, total = fitting(target, expert_keys)
    if fit:
        sys.exit(f"prepare_real: {fit} of the {total} tensors of {target} fit {EXPERT}: is that model a tiny one?")
    print(f"{action} {target} ({total} tensors, none fits the tiny I2V experts)")

    prepare_media(models, comfy_dir, tiny_dir, check_all)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, required=True, help="the volume (REAL_VOLUME): holds models/ with the tiny models")
    parser.add_argument("--comfy-dir", type=Path, required=True, help="ComfyUI installed by install.sh (REAL_COMFY_DIR)")
    parser.add_argument("--tiny-models-dir", type=Path, default=SHARED_TINY, help="the shared tools/tiny-models folder")
    parser.add_argument("--check-all", action="store_true", help="load every media and interpolation model with ComfyUI, not only new ones")
    args = parser.parse_args()
    prepare(args.volume, args.comfy_dir, args.tiny_models_dir, args.check_all)


if __name__ == "__main__":
    main()
