"""Helpers that run inside ComfyUI's own Python and import its code (``--cpu``): load a model file with
ComfyUI's loader and say what it detected, or write a random-weight file from ComfyUI's module classes.

    <comfy venv>/bin/python tests/integration/comfy_side.py --comfy-dir <comfy> check KIND=PATH ...
    <comfy venv>/bin/python tests/integration/comfy_side.py --comfy-dir <comfy> write WHAT PATH
    <comfy venv>/bin/python tests/integration/comfy_side.py --comfy-dir <comfy> s2v-windows ENCODER OUT WAV=L,L,L ...
    <comfy venv>/bin/python tests/integration/comfy_side.py --comfy-dir <comfy> drop-keys SOURCE TARGET PREFIX

prepare_real.py and record_media.py start it as a subprocess (importing ComfyUI sets process-wide
state, and the loaders need its environment). KIND: diffusion_model, audio_encoder, clip_vision,
frame_interpolation, checkpoint. WHAT: rife_ifnet5, film, wav2vec2_base, audio_encoder_random_keys, sdpose,
sam3, sam3.1 (the multiplex layout of ComfyUI's templates' sam3.1_multiplex_fp16.safetensors).
One output line per file. ``s2v-windows`` runs ComfyUI's own S2V conditioning code
(``wan_sound_to_video``, as WanSoundImageToVideo and WanSoundImageToVideoExtend call it) on the wav2vec2
encoding of each WAV and writes, per segment, which frames of the audio embedding it receives.
``drop-keys`` copies a safetensors file without the tensors whose names start with PREFIX.
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
    if kind == "checkpoint":
        import comfy.sd

        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path))
        net = model.model.diffusion_model
        head = f" {'with' if hasattr(net, 'heatmap_head') else 'without'} heatmap_head" if type(net).__name__ == "UNetModel" else ""
        first_stage = None if vae is None else vae.first_stage_model  # a VAE without a model when the file has no VAE weights
        return (f"{type(model.model.model_config).__name__} ({type(net).__name__}{head}, "
                f"VAE {'none' if first_stage is None else type(first_stage).__name__}, "
                f"text encoder {'none' if clip is None else type(clip.cond_stage_model).__name__})")
    raise ValueError(f"unknown kind {kind}")


def sdpose_state() -> dict[str, torch.Tensor]:
    """An SDPose checkpoint as ``CheckpointLoaderSimple`` reads it: an SD2-style UNet (``SD20``: 320 wide,
    1024-wide linear cross-attention) with the 640-channel ``heatmap_head``, made shallow (three levels,
    one res block each, one transformer block at the deepest level, so no attention runs at the
    latent's full 96x128 size), and TAESD as its VAE in place of the SD VAE, whose fixed-size encoder
    takes ~40 s and ~22 GB per 768x1024 frame on a 2-core CPU (docs/development.md)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.taesd.taesd import TAESD

    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1, 1, 1],
                     channel_mult=[1, 2, 2], transformer_depth=[0, 0, 1], transformer_depth_output=[0] * 6,
                     transformer_depth_middle=-1, context_dim=1024, use_linear_in_transformer=True,
                     use_spatial_transformer=True, num_head_channels=64, num_heads=-1, legacy=False, heatmap_head=True,
                     operations=comfy.ops.disable_weight_init)  # fmt: skip
    state = {f"model.diffusion_model.{key}": value for key, value in random_state(unet).items()}
    state |= {f"first_stage_model.{key}": value for key, value in random_state(TAESD()).items()}
    return {key: value.half() for key, value in state.items()}


def sam3_state(multiplex: bool = False) -> dict[str, torch.Tensor]:
    """A SAM 3 checkpoint (SAM 3.1 multiplex with ``multiplex``) as ``CheckpointLoaderSimple`` reads it, fp16:
    ComfyUI's ``SAM3Model`` and the CLIP text model it makes of the language backbone, with the keys renamed
    back to Meta's, which ``SAM3.process_unet_state_dict`` and ``process_clip_state_dict`` convert from:
    fused ``in_proj_weight``/``in_proj_bias`` for the detector's attention (ComfyUI's ``SplitMHA``), the SAM
    decoders' ``mlp.lin1``/``mlp.lin2``/``norm_final_attn``, SAM 3.1's ``tracker.model.*``, and the text
    encoder in open_clip naming under ``detector.backbone.language_backbone.encoder.``. Full size (~0.86 B
    values, ~1.7 GB): ComfyUI builds both from fixed configs and reads no shape from the file. Left out (and
    reportedly absent from Comfy-Org's sam3.1_multiplex_fp16.safetensors): the per-block ``freqs_cis``, which
    ComfyUI drops, and the unused ``encoder.text_projection``, 1024x512 in Meta's file, which ComfyUI's loader
    refuses against its square projection unless DynamicVRAM is on (not on a CPU). SAM 3 without multiplex
    cannot run SAM3_VideoTrack in this ComfyUI (no text-only tracking; with a mask its result is no dict)."""
    import comfy.ops
    from comfy.clip_model import CLIPTextModel
    from comfy.ldm.sam3.detector import SAM3Model, SplitMHA
    from comfy.text_encoders.sam3_clip import SAM3_CLIP_CONFIG

    model = SAM3Model(device="meta", operations=comfy.ops.disable_weight_init, image_model="SAM31" if multiplex else "SAM3")
    state = {key: value.half() for key, value in random_state(model).items()}
    for name in [name for name, module in model.named_modules() if isinstance(module, SplitMHA)]:
        for leaf in ("weight", "bias"):
            state[f"{name}.in_proj_{leaf}"] = torch.cat([state.pop(f"{name}.{p}_proj.{leaf}") for p in "qkv"])
    for key in [key for key in state if "sam_mask_decoder.transformer." in key]:
        theirs = key.replace(".mlp.0.", ".mlp.lin1.").replace(".mlp.2.", ".mlp.lin2.").replace(".norm_final.", ".norm_final_attn.")
        state[theirs] = state.pop(key)
    if multiplex:
        state = {f"tracker.model.{key[len('tracker.') :]}" if key.startswith("tracker.") else key: value for key, value in state.items()}

    text_model = CLIPTextModel(SAM3_CLIP_CONFIG, None, "meta", comfy.ops.disable_weight_init)
    text = {key: value.half() for key, value in random_state(text_model, seed=1).items()}
    text.pop("text_projection.weight")
    encoder = "detector.backbone.language_backbone.encoder."
    for i in range(SAM3_CLIP_CONFIG["num_hidden_layers"]):
        layer, block = f"text_model.encoder.layers.{i}.", f"{encoder}transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            state[f"{block}attn.in_proj_{leaf}"] = torch.cat([text.pop(f"{layer}self_attn.{p}_proj.{leaf}") for p in "qkv"])
            for ours, theirs in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                                 ("self_attn.out_proj", "attn.out_proj")):  # fmt: skip
                state[f"{block}{theirs}.{leaf}"] = text.pop(f"{layer}{ours}.{leaf}")
    for ours, theirs in (("embeddings.token_embedding.weight", "token_embedding.weight"),
                         ("embeddings.position_embedding.weight", "positional_embedding"),
                         ("final_layer_norm.weight", "ln_final.weight"), ("final_layer_norm.bias", "ln_final.bias")):  # fmt: skip
        state[encoder + theirs] = text.pop(f"text_model.{ours}")
    assert not text, f"text encoder keys left unmapped: {sorted(text)}"
    return state


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
    elif what == "sdpose":
        state = sdpose_state()
    elif what in ("sam3", "sam3.1"):
        state = sam3_state(multiplex=what == "sam3.1")
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


def drop_keys(source: Path, target: Path, prefix: str) -> None:
    from safetensors.torch import load_file

    state = {key: value for key, value in load_file(str(source)).items() if not key.startswith(prefix)}
    save_file(state, str(target))
    print(f"wrote    {target} ({source.name} without {prefix}*: {len(state)} tensors)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfy-dir", type=Path, required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check").add_argument("items", nargs="+", help="KIND=PATH")
    writer = sub.add_parser("write")
    writer.add_argument("what", choices=["rife_ifnet5", "film", "wav2vec2_base", "audio_encoder_random_keys", "sdpose", "sam3", "sam3.1"])
    writer.add_argument("path", type=Path)
    windows = sub.add_parser("s2v-windows")
    windows.add_argument("encoder", type=Path)
    windows.add_argument("out", type=Path)
    windows.add_argument("plans", nargs="+", help="WAV=L,L,... (segment lengths)")
    dropper = sub.add_parser("drop-keys")
    for name in ("source", "target"):
        dropper.add_argument(name, type=Path)
    dropper.add_argument("prefix")
    args = parser.parse_args()
    if args.command == "drop-keys":
        drop_keys(args.source, args.target, args.prefix)
        return
    boot(args.comfy_dir)
    if args.command == "check":
        sys.exit(1 if check(args.items) else 0)
    if args.command == "s2v-windows":
        s2v_windows(args.encoder, args.out, args.plans)
        return
    write(args.what, args.path)


if __name__ == "__main__":
    main()
