"""Helpers that run inside ComfyUI's own Python and import its code (``--cpu``): load a model file with
ComfyUI's loader and say what it detected, or write a random-weight file from ComfyUI's module classes.

    <comfy venv>/bin/python tests/integration/comfy_side.py --comfy-dir <comfy> check KIND=PATH ...
    <comfy venv>/bin/python tests/integration/comfy_side.py --comfy-dir <comfy> write WHAT PATH
    <comfy venv>/bin/python tests/integration/comfy_side.py --comfy-dir <comfy> s2v-windows ENCODER OUT WAV=L,L,L ...

prepare_real.py and record_media.py start it as a subprocess (importing ComfyUI sets process-wide
state, and the loaders need its environment). KIND: diffusion_model, audio_encoder, clip_vision,
frame_interpolation. WHAT: rife_ifnet5, film, wav2vec2_base, audio_encoder_random_keys.
One output line per file. ``s2v-windows`` runs ComfyUI's own S2V conditioning code
(``wan_sound_to_video``, as WanSoundImageToVideo and WanSoundImageToVideoExtend call it) on the wav2vec2
encoding of each WAV and writes, per segment, which frames of the audio embedding it receives.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file


def boot(comfy_dir: Path) -> None:
    """Import ComfyUI as main.py would with ``--cpu`` (its device is chosen at import)."""
    sys.path.insert(0, str(comfy_dir.resolve()))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()


class KeyWarnings(logging.Handler):
    """Collects ComfyUI's log lines about keys that did not load (missing, unexpected, left over)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if any(word in text.lower() for word in ("missing", "unexpected", "left over")):
            self.lines.append(text[:200])


def detected(kind: str, path: Path) -> str:
    import comfy.utils

    if kind == "diffusion_model":
        import comfy.sd

        patcher = comfy.sd.load_diffusion_model(str(path))
        model = patcher.model
        return f"{type(model).__name__} ({type(model.diffusion_model).__name__}, weights {model.get_dtype()})"
    if kind == "audio_encoder":
        from comfy.audio_encoders.audio_encoders import load_audio_encoder_from_sd

        sd = comfy.utils.load_torch_file(str(path), safe_load=True)
        width = sd["encoder.layer_norm.bias"].shape[0] if "encoder.layer_norm.bias" in sd else None
        encoder = load_audio_encoder_from_sd(sd)
        return f"{type(encoder.model).__name__} ({width} wide, {encoder.dtype})"
    if kind == "clip_vision":
        import comfy.clip_vision

        vision = comfy.clip_vision.load(str(path))
        return f"{type(vision.model).__name__} (image size {vision.image_size}, {vision.dtype})"
    if kind == "frame_interpolation":
        from comfy_extras.nodes_frame_interpolation import FrameInterpolationModelLoader

        model = FrameInterpolationModelLoader._detect_and_load(comfy.utils.load_torch_file(str(path), safe_load=True))
        return f"{type(model).__name__} ({sum(p.numel() for p in model.parameters())} parameters)"
    raise ValueError(f"unknown kind {kind}")


def check(items: list[str]) -> int:
    handler = KeyWarnings()
    logging.getLogger().addHandler(handler)
    failed = 0
    for item in items:
        kind, path = item.split("=", 1)
        handler.lines.clear()
        try:
            what = detected(kind, Path(path))
        except Exception as err:  # report and go on with the next file
            print(f"FAILED   {path}: ComfyUI's {kind} loader raised {type(err).__name__}: {err}", flush=True)
            failed += 1
            continue
        note = f"; key warnings: {handler.lines}" if handler.lines else ", every key loaded"
        print(f"checked  {path}: ComfyUI loads it as {what}{note}", flush=True)
        failed += bool(handler.lines)
    return failed


def random_state(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for every tensor of ``module``: weights ~ N(0, 1/fan_in), biases 0, norm scales 1."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if key.endswith("bias"):
            state[key] = torch.zeros(value.shape)
        elif value.ndim <= 1 or "norm" in key or key.endswith(".beta"):
            state[key] = torch.ones(value.shape)
        else:
            state[key] = torch.randn(value.shape, generator=generator) / math.sqrt(math.prod(value.shape[1:]))
    return state


def write(what: str, path: Path) -> None:
    import comfy.ops

    if what == "rife_ifnet5":  # ComfyUI's IFNet (5 blocks, RIFE 4.2x layout), keys named as in RIFE's own files
        from comfy_extras.frame_interpolation_models.ifnet import IFNet

        state = {}
        for key, value in random_state(IFNet()).items():
            if key.startswith("blocks."):  # blocks.3.conv0... -> block3.conv0...
                index, rest = key[len("blocks.") :].split(".", 1)
                key = f"block{index}.{rest}"
            state[key] = value
    elif what == "film":  # FILMNet's fixed config, fp16
        from comfy_extras.frame_interpolation_models.film_net import FILMNet

        state = {key: value.half() for key, value in random_state(FILMNet()).items()}
    elif what == "wav2vec2_base":  # the 768-wide "base" layout ComfyUI also accepts (12 layers), fp16
        from comfy.audio_encoders.wav2vec2 import Wav2Vec2Model

        base = Wav2Vec2Model(embed_dim=768, num_heads=12, num_layers=12, conv_norm=False, conv_bias=False, do_normalize=False,
                             do_stable_layer_norm=False, operations=comfy.ops.disable_weight_init)  # fmt: skip
        state = {key: value.half() for key, value in random_state(base).items()}
    elif what == "audio_encoder_random_keys":  # a safetensors file that is no audio encoder at all
        generator = torch.Generator().manual_seed(1)
        state = {f"layers.{i}.weight": torch.randn(16, 16, generator=generator) for i in range(4)}
    else:
        raise ValueError(f"unknown file kind {what}")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    save_file({key: value.contiguous() for key, value in state.items()}, str(part))
    part.replace(path)
    print(f"wrote    {path} ({what}: {len(state)} tensors, {sum(v.numel() for v in state.values())} values)", flush=True)


def s2v_windows(encoder_path: Path, out: Path, plans: list[str]) -> None:
    """For each ``WAV=L,L,...``: the audio window each chained S2V segment of length L gets (16 fps frames)."""
    import json

    import comfy.utils
    from comfy.audio_encoders.audio_encoders import load_audio_encoder_from_sd
    from comfy_extras.nodes_audio import load
    from comfy_extras.nodes_wan import wan_sound_to_video

    encoder = load_audio_encoder_from_sd(comfy.utils.load_torch_file(str(encoder_path), safe_load=True))
    report = {}
    for plan in plans:
        wav, lengths = plan.rsplit("=", 1)
        waveform, rate = load(wav)
        encoded = encoder.encode_audio(waveform.unsqueeze(0), rate)
        cond = [[torch.zeros(1, 1, 16), {}]]
        latent_frames, segments = 0, []
        for index, length in enumerate(int(x) for x in lengths.split(",")):
            offset = latent_frames * 4  # what WanSoundImageToVideoExtend derives from its video_latent (0 for the first segment)
            positive, _, out_latent, next_offset = wan_sound_to_video(cond, cond, None, 64, 64, length, 1, frame_offset=offset,
                                                                  audio_encoder_output=encoded)  # fmt: skip
            latent = out_latent["samples"]
            embed = positive[0][1].get("audio_embed")
            frames = None if embed is None else int(embed.shape[-1])
            segments.append({"segment": index + 1, "node": "WanSoundImageToVideo" if index == 0 else "WanSoundImageToVideoExtend",
                             "length": length, "latent_frames": int(latent.shape[2]), "audio_window_frames_wanted": int(latent.shape[2]) * 4,
                             "frame_offset": offset, "audio_embed_frames": frames,
                             "audio_seconds": None if frames is None else [offset / 16, (offset + frames) / 16],
                             "frame_offset_returned": next_offset})  # fmt: skip
            latent_frames += int(latent.shape[2])
        report[f"{Path(wav).name}, lengths {lengths}"] = {
            "audio_seconds": round(waveform.shape[-1] / rate, 4), "sample_rate": rate, "audio_samples_at_16k": encoded["audio_samples"],
            "wav2vec2_frames_50hz": int(encoded["encoded_audio_all_layers"][0].shape[1]), "hidden_states": len(encoded["encoded_audio_all_layers"]),
            "segments": segments, "decoded_video_frames_of_the_concatenated_latent": latent_frames * 4 - 3}  # fmt: skip
        print(f"s2v-windows {Path(wav).name} {lengths}: {[seg['audio_seconds'] for seg in segments]}", flush=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfy-dir", type=Path, required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check").add_argument("items", nargs="+", help="KIND=PATH")
    writer = sub.add_parser("write")
    writer.add_argument("what", choices=["rife_ifnet5", "film", "wav2vec2_base", "audio_encoder_random_keys"])
    writer.add_argument("path", type=Path)
    windows = sub.add_parser("s2v-windows")
    windows.add_argument("encoder", type=Path)
    windows.add_argument("out", type=Path)
    windows.add_argument("plans", nargs="+", help="WAV=L,L,... (segment lengths)")
    args = parser.parse_args()
    boot(args.comfy_dir)
    if args.command == "check":
        sys.exit(1 if check(args.items) else 0)
    if args.command == "s2v-windows":
        s2v_windows(args.encoder, args.out, args.plans)
        return
    write(args.what, args.path)


if __name__ == "__main__":
    main()
