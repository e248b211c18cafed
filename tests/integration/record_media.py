"""Record, from the real ComfyUI v0.30.0, what the media features need (record before you build).

    REAL_COMFY_DIR=<comfy> REAL_COMFY_PYTHON=<venv>/bin/python REAL_VOLUME=<volume> \\
        .venv/bin/python tests/integration/record_media.py [--only GROUP ...] [--out tests/recordings]

Opt-in and slow (the first group that encodes the prompt texts pays ~100 s); nothing in CI runs it.
It needs the setup of docs/development.md ("The real ComfyUI: the opt-in suite"), prepare_real.py
included (the media stand-ins and the native frame-interpolation models). One server is started for
all groups (``real_server.Server``: ``--cpu``, throwaway input/output/temp/user folders), plus a
second one with ``VHS_STRICT_PATHS=1`` for the ``custom`` group; never two at once. Inputs are made
here (``media_inputs``) and uploaded with ``POST /upload/image``. Groups, in order:

  object_info  GET /object_info of the audio / S2V nodes and of the other nodes used here
  audio        audio_formats.json: upload + LoadAudio -> SaveAudio for each format, and bad files
  vhs_audio    vhs_audio.json: VHS_VideoCombine with audio (webm, h265, longer/shorter audio)
  video        video_formats.json: LoadVideo -> GetVideoComponents -> VHS per container/codec, VHS_LoadVideo
  interp       native_rife_x{2,3,4}_*, native_film_x{2,3,4}_*, native_*_one_frame_*, native_rife_error_*
  s2v          s2v_3seg_* (three chained segments), s2v_3seg_short_audio_*, s2v_3seg_partial_window_*, s2v_error_*,
               s2v_segment_audio_windows.json (ComfyUI's S2V code, run in its Python: the audio each segment gets)
  animate      animate_replace_*, animate_2seg_*, animate_pose_short_*
  sam3         object_info_sam3_nodes.json; animate_replace_from_video_* (pose, face and SAM 3.1's person mask from
               one 3-frame clip, Animate replace on it)
  sdpose       object_info_sdpose_nodes.json; sdpose_pose_face_* (a 96x64 clip's pose and face crops, with the
               keypoints and boxes shown), sdpose_error_* (no such checkpoint; a checkpoint without the heatmap
               head), animate_pose_from_video_* (Animate driven by the drawn pose and face crops)
  easycache    easycache_ti2v5b_*, easycache_t2v_* (+ their server log lines)
  custom       custom_graphs_validation.json (VHS path nodes, SaveLatent, CheckpointSave; strict paths)

Each ``<label>_`` set is ``_api.json`` (the graph), ``_prompt_response.json``, ``_ws.jsonl`` (every
message with its time offset ``t`` from the POST), ``_history.json`` and ``_mp4_probe.json`` (PyAV:
video and audio stream of each output file). Paths are rewritten to ``/comfyui``, ``<volume>``, ``<work>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration import media_graphs as g  # noqa: E402
from tests.integration import media_inputs as m  # noqa: E402
from tests.integration.real_server import Run, Server, probe  # noqa: E402

MEDIA_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".flac", ".wav", ".mp3", ".opus", ".ogg", ".m4a", ".gif", ".webp"}
# Groups without the text encoder first: ComfyUI keeps only the outputs of nodes that the latest prompt used,
# so one text-free prompt between two text-encoding ones costs the ~100 s encode again.
GROUPS = ["object_info", "audio", "vhs_audio", "video", "interp", "s2v", "sdpose", "sam3", "animate", "easycache", "custom"]
HERE = Path(__file__).resolve().parent


class Recorder:
    """Runs graphs on one server and writes what it saw into ``out``."""

    def __init__(self, server: Server, out: Path, root: Path) -> None:
        self.server, self.out, self.root = server, out, root
        self.uploads: dict[str, dict] = {}

    def write(self, name: str, data: object) -> None:
        """Write JSON (or text) with this machine's paths replaced: the server's own, then ``<tmp>`` for the rest."""
        text = data if isinstance(data, str) else json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        (self.out / name).write_text(self.server.clean(text).replace(str(self.root), "<tmp>"))

    def upload(self, name: str, data: bytes) -> dict:
        self.uploads[name] = answer = self.server.upload(name, data)
        return answer

    def probes(self, run: Run, frame_stats: bool = False) -> dict:
        found = {}
        for node_id, output in run.outputs().items():
            for key, items in output.items():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and Path(item.get("filename", "")).suffix in MEDIA_SUFFIXES:
                        found[f"{node_id}.{key}.{item['filename']}"] = {"item": item, "probe": probe(self.server.output_file(item), frame_stats)}
        return found

    def run(self, label: str | None, graph: dict, frame_stats: bool = False) -> tuple[Run, dict]:
        run = self.server.run(graph)
        probes = self.probes(run, frame_stats) if run.status == 200 else {}
        if label:
            self.write(f"{label}_api.json", graph)
            self.write(f"{label}_prompt_response.json", {"status": run.status, "content_type": run.content_type, "body": run.response})
            if run.status == 200:
                self.write(f"{label}_ws.jsonl", "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in run.ws))
                self.write(f"{label}_history.json", run.history)
                self.write(f"{label}_mp4_probe.json", probes)
        print(f"{label or '(case)'}: HTTP {run.status}, {self.outcome(run)}, {run.seconds:.2f} s", flush=True)
        return run, probes

    @staticmethod
    def outcome(run: Run) -> str:
        if run.status != 200:
            return "rejected"
        error = run.error()
        return f"execution_error on {error['node_type']}: {error['exception_type']}" if error else run.history[run.prompt_id]["status"]["status_str"]

    def case(self, run: Run, probes: dict, texts: dict | None = None) -> dict:
        """A compact record for the combined files: answer, outcome, error, outputs, probes, shown values."""
        record: dict = {"graph": run.graph, "prompt_response": {"status": run.status, "body": run.response}, "outcome": self.outcome(run)}
        if run.status == 200:
            record["seconds"] = run.seconds
            record["ws_types"] = [item["msg"]["type"] for item in run.ws if item["kind"] == "text"]
            if run.error():
                record["execution_error"] = run.error()
            record["outputs"] = run.outputs()
            record["probes"] = probes
            if texts:
                record["shown"] = {what: run.outputs().get(nid, {}).get("text", [None])[0] for nid, what in texts.items()}
        return record


# --- groups -------------------------------------------------------------------------------------------
AUDIO_NODES = ["LoadAudio", "TrimAudioDuration", "AudioEncoderLoader", "AudioEncoderEncode", "WanSoundImageToVideo",
               "WanSoundImageToVideoExtend", "LatentConcat", "TrimVideoLatent", "VHS_VideoCombine", "SaveAudio"]  # fmt: skip
OTHER_NODES = ["PreviewAny", "GetImageSize", "EmptyImage", "ImageToMask", "ImageFromBatch", "ImageBatch", "FrameInterpolationModelLoader",
               "FrameInterpolate", "EasyCache", "SaveLatent", "CheckpointSave", "EmptyLatentImage", "LoadVideo", "VHS_LoadVideo",
               "VHS_LoadVideoPath", "VHS_LoadImagesPath", "VHS_LoadAudio", "VHS_PruneOutputs"]  # fmt: skip


def record_object_info(rec: Recorder) -> None:
    rec.write("object_info_audio_nodes.json", rec.server.object_info(AUDIO_NODES))
    rec.write("object_info_more_media_nodes.json", rec.server.object_info(OTHER_NODES))


def audio_inputs() -> dict[str, bytes]:
    mp3 = m.audio_file("mp3", "libmp3lame", 1.0, 44100, 2)
    return {
        "wav_16k_mono.wav": m.audio_file("wav", "pcm_s16le", 1.0, 16000, 1),
        "wav_44k1_stereo.wav": m.audio_file("wav", "pcm_s16le", 1.0, 44100, 2),
        "wav_48k_stereo.wav": m.audio_file("wav", "pcm_s16le", 1.0, 48000, 2),
        "flac_44k1_stereo.flac": m.audio_file("flac", "flac", 1.0, 44100, 2),
        "mp3_44k1_stereo.mp3": mp3,
        "opus_48k_stereo.ogg": m.audio_file("ogg", "libopus", 1.0, 48000, 2),
        "aac_44k1_stereo.m4a": m.audio_file("ipod", "aac", 1.0, 44100, 2),
        "h264_aac_44k1.mp4": m.video_file("mp4", "libx264", 16, 16, audio=("aac", 44100, 2)),
        "vp9_opus_48k.webm": m.video_file("webm", "libvpx-vp9", 16, 16, audio=("libopus", 48000, 2)),
        "png_renamed.wav": m.png(),
        "mp3_truncated_to_a_third.mp3": mp3[: len(mp3) // 3],
        "mp3_first_100_bytes.mp3": mp3[:100],
    }


def record_audio(rec: Recorder, work: Path) -> None:
    cases = {}
    for name, data in audio_inputs().items():
        (work / name).write_bytes(data)
        upload = rec.upload(name, data)
        run, probes = rec.run(None, g.load_and_save_audio(name, f"audio/{Path(name).stem}"))
        cases[name] = {"input": probe(work / name), "upload": upload} | rec.case(run, probes)
    run, _ = rec.run(None, g.load_and_save_audio("no_such_file.wav", "audio/missing"))
    cases["no_such_file.wav (not uploaded)"] = rec.case(run, {})
    listed = rec.server.object_info(["LoadAudio"])["LoadAudio"]["input"]["required"]["audio"]
    rec.write("audio_formats.json", {"cases": cases, "LoadAudio_audio_input_after_the_uploads": listed})


def record_s2v(rec: Recorder, work: Path, fixtures: Path, volume: Path) -> None:
    rec.upload(g.REF, m.png(96, 64, (200, 120, 40)))
    speech = {f"speech_{s}s_16k.wav": m.audio_file("wav", "pcm_s16le", s, 16000, 1, pulse=4.0) for s in (1, 2, 10)}
    for name, data in speech.items():
        rec.upload(name, data)
        (work / name).write_bytes(data)
    rec.run("s2v_3seg", g.s2v_segments("speech_2s_16k.wav", [5, 5, 5], "wan22_s2v_3seg"))
    rec.run("s2v_3seg_short_audio", g.s2v_segments("speech_1s_16k.wav", [5, 5, 5], "wan22_s2v_3seg_short"))
    rec.run("s2v_3seg_partial_window", g.s2v_segments("speech_1s_16k.wav", [5, 5, 9], "wan22_s2v_3seg_partial"))
    windows = work / "s2v_windows.json"  # ComfyUI's own S2V code on the same WAVs: which audio each segment gets
    plans = [(2, "5,5,5"), (1, "5,5,5"), (1, "5,5,9"), (2, "5,9,5"), (10, "77,77,77")]  # (audio seconds, segment lengths)
    comfy_side(rec.server, "s2v-windows", str(volume / "models/audio_encoders" / g.WAV2VEC2), str(windows),
               *(f"{work / f'speech_{seconds}s_16k.wav'}={lengths}" for seconds, lengths in plans))  # fmt: skip
    rec.write("s2v_segment_audio_windows.json", json.loads(windows.read_text()))
    graph = g.s2v_segments("speech_2s_16k.wav", [5], "wan22_s2v_err")
    rec.run("s2v_error_missing_encoder", graph | {"7": g.node("AudioEncoderLoader", audio_encoder_name="no_such_encoder.safetensors")})
    rec.upload("png_renamed.wav", m.png())
    rec.run("s2v_error_not_audio", graph | {"8": g.node("LoadAudio", audio="png_renamed.wav")})
    for what, name in (("audio_encoder_random_keys", "test_random_keys.safetensors"), ("wav2vec2_base", "test_wav2vec2_base_768.safetensors")):
        target = fixtures / "audio_encoders" / name
        if not target.is_file():
            comfy_side(rec.server, "write", what, str(target))
        short = "random_keys" if "random" in what else "base"
        rec.run(f"s2v_error_{short}_encoder", g.s2v_segments("speech_2s_16k.wav", [5], "wan22_s2v_err", encoder=name))


def comfy_side(server: Server, *args: str) -> None:
    subprocess.run([str(server.python), str(HERE / "comfy_side.py"), "--comfy-dir", str(server.comfy_dir), *args], check=True)


def record_vhs_audio(rec: Recorder) -> None:
    rec.upload("tone_2s_44k1_stereo.wav", m.audio_file("wav", "pcm_s16le", 2.0, 44100, 2))
    rec.upload("tone_0.25s_44k1_stereo.wav", m.audio_file("wav", "pcm_s16le", 0.25, 44100, 2))
    rec.upload("tone_1s_48k_stereo.wav", m.audio_file("wav", "pcm_s16le", 1.0, 48000, 2))
    plans = {
        "webm (5 frames, 1 s audio)": g.frames_with_audio(5, "tone_1s_48k_stereo.wav", "vhs_audio_webm", fmt="video/webm"),
        "h265-mp4 (5 frames, 1 s audio)": g.frames_with_audio(5, "tone_1s_48k_stereo.wav", "vhs_audio_h265", fmt="video/h265-mp4"),
        "h264-mp4, audio longer (5 frames = 0.3125 s, 2 s audio)": g.frames_with_audio(5, "tone_2s_44k1_stereo.wav", "vhs_audio_longer"),
        "h264-mp4, audio longer, trim_to_audio": g.frames_with_audio(5, "tone_2s_44k1_stereo.wav", "vhs_audio_longer_trim", trim_to_audio=True),
        "h264-mp4, audio shorter (16 frames = 1 s, 0.25 s audio)": g.frames_with_audio(16, "tone_0.25s_44k1_stereo.wav", "vhs_audio_shorter"),
        "h264-mp4, audio shorter, trim_to_audio": g.frames_with_audio(16, "tone_0.25s_44k1_stereo.wav", "vhs_audio_shorter_trim",
                                                                       trim_to_audio=True),  # fmt: skip
    }
    cases = {}
    for title, graph in plans.items():
        run, probes = rec.run(None, graph)
        prefix = graph["3"]["inputs"]["filename_prefix"]
        every_file = {p.name: probe(p) for p in sorted(rec.server.dirs["output"].glob(f"{prefix}_*")) if p.suffix in MEDIA_SUFFIXES}
        cases[title] = rec.case(run, probes) | {"all_files_written": every_file, "server_log": run.log}
    rec.write("vhs_audio.json", cases)


def video_inputs() -> dict[str, bytes]:
    h264 = m.video_file("mp4", "libx264", 12, 24)
    return {
        "h264_24fps.mp4": h264,
        "h264_aac_24fps.mp4": m.video_file("mp4", "libx264", 12, 24, audio=("aac", 44100, 2)),
        "h265_24fps.mp4": m.video_file("mp4", "libx265", 12, 24),
        "vp8_opus_24fps.webm": m.video_file("webm", "libvpx", 12, 24, audio=("libopus", 48000, 2)),
        "vp9_24fps.webm": m.video_file("webm", "libvpx-vp9", 12, 24),
        "av1_24fps.webm": m.video_file("webm", "libsvtav1", 12, 24),
        "h264_30fps.mov": m.video_file("mov", "libx264", 15, 30),
        "png_renamed.mp4": m.png(),
        "text_renamed.mp4": b"this is not a video\n" * 50,
        "h264_first_half.mp4": h264[: len(h264) // 2],
    }


def record_video(rec: Recorder, work: Path) -> None:
    cases = {}
    for name, data in video_inputs().items():
        (work / name).write_bytes(data)
        rec.upload(name, data)
        graph, texts = g.load_video_components(name, f"video_in/{Path(name).stem}")
        run, probes = rec.run(None, graph)
        cases[f"LoadVideo {name}"] = {"input": probe(work / name), "upload": rec.uploads[name]} | rec.case(run, probes, texts)
    for title, options in {"defaults": {}, "frame_load_cap 5, force_rate 12, 32x48, skip_first_frames 1":
                           {"frame_load_cap": 5, "force_rate": 12, "custom_width": 32, "custom_height": 48, "skip_first_frames": 1}}.items():  # fmt: skip
        graph, texts = g.vhs_load_video("h264_aac_24fps.mp4", f"video_in/vhs_load_{len(options)}", **options)
        run, probes = rec.run(None, graph)
        cases[f"VHS_LoadVideo h264_aac_24fps.mp4, {title}"] = rec.case(run, probes, texts)
    rec.write("video_formats.json", cases)


def upload_animate_inputs(rec: Recorder) -> None:
    rec.upload(g.REF, m.png(96, 64, (200, 120, 40)))
    for name, count, shift in (("animate_pose_13.mp4", 13, 0), ("animate_face_13.mp4", 13, 3), ("animate_background_13.mp4", 13, 6),
                               ("animate_mask_13.mp4", 13, 9), ("animate_pose_3.mp4", 3, 0)):  # fmt: skip
        rec.upload(name, m.video_file("mp4", "libx264", count, 16, shift=shift))


def record_animate(rec: Recorder) -> None:
    upload_animate_inputs(rec)
    graph = g.animate_base("animate_pose_13.mp4", "animate_face_13.mp4") | {
        "13": g.node("LoadVideo", file="animate_background_13.mp4"),
        "14": g.node("GetVideoComponents", video=["13", 0]),
        "15": g.node("LoadVideo", file="animate_mask_13.mp4"),
        "16": g.node("GetVideoComponents", video=["15", 0]),
        "17": g.node("ImageToMask", image=["16", 0], channel="red"),
        "18": g.animate_node(5, face=True, background_video=["14", 0], character_mask=["17", 0]),
    }
    decoded = g.animate_segment(graph, "18", 19, seed=42)
    graph["22"] = g.vhs([decoded, 0], "wan22_animate_replace")
    g.animate_outputs(graph, "18", 23)
    rec.run("animate_replace", graph)

    graph = g.animate_base("animate_pose_13.mp4", "animate_face_13.mp4") | {"13": g.animate_node(9, face=True)}
    first = g.animate_segment(graph, "13", 14, seed=42)
    graph["17"] = g.animate_node(9, face=True, offset=["13", 5], continue_motion=[first, 0])
    second = g.animate_segment(graph, "17", 18, seed=43)
    graph["21"] = g.node("ImageFromBatch", image=[second, 0], batch_index=["17", 4], length=4096)
    graph["22"] = g.node("ImageBatch", image1=[first, 0], image2=["21", 0])
    graph["23"] = g.vhs(["22", 0], "wan22_animate_2seg")
    g.animate_outputs(graph, "13", 24)
    g.animate_outputs(graph, "17", 27)
    rec.run("animate_2seg", graph)

    graph = g.animate_base("animate_pose_3.mp4", None) | {"13": g.animate_node(5, face=False)}
    graph["17"] = g.vhs([g.animate_segment(graph, "13", 14, seed=42), 0], "wan22_animate_pose_short")
    rec.run("animate_pose_short", graph)


SDPOSE_NODES = ["CheckpointLoaderSimple", "SDPoseKeypointExtractor", "SDPoseDrawKeypoints", "SDPoseFaceBBoxes", "CropByBBoxes"]


def record_sdpose(rec: Recorder, fixtures: Path) -> None:
    """The pose preprocessing on its own (no text encoder), its two errors, then Animate driven by it."""
    rec.write("object_info_sdpose_nodes.json", rec.server.object_info(SDPOSE_NODES))
    rec.upload("sdpose_clip_5.mp4", m.video_file("mp4", "libx264", 5, 16, width=96, height=64))
    frames = {"1": g.node("LoadVideo", file="sdpose_clip_5.mp4"), "2": g.node("GetVideoComponents", video=["1", 0])}
    nodes, keypoints, drawn, crops = g.sdpose(["2", 0], 3)
    graph = frames | nodes | {"10": g.vhs([drawn, 0], "wan22_sdpose_pose"), "11": g.vhs([crops, 0], "wan22_sdpose_face")}
    g.shown(graph, 12, {"keypoints": [keypoints, 0], "face_bboxes": [str(int(keypoints) + 2), 0]})
    rec.run("sdpose_pose_face", graph)
    missing = frames | g.sdpose(["2", 0], 3, checkpoint="no_such_sdpose.safetensors")[0]
    missing["10"] = g.vhs([drawn, 0], "wan22_sdpose_missing")
    rec.run("sdpose_error_missing_checkpoint", missing)
    source = rec.server.volume / "models" / "checkpoints" / g.SDPOSE
    comfy_side(rec.server, "drop-keys", str(source), str(fixtures / "checkpoints" / "sdpose_no_head.safetensors"), "model.diffusion_model.heatmap_head.")
    headless = frames | g.sdpose(["2", 0], 3, checkpoint="sdpose_no_head.safetensors")[0]
    headless["10"] = g.vhs([drawn, 0], "wan22_sdpose_no_head")
    rec.run("sdpose_error_no_heatmap_head", headless)

    upload_animate_inputs(rec)
    nodes, _, drawn, crops = g.sdpose(["10", 0], 30)
    graph = g.animate_base("sdpose_clip_5.mp4", None) | nodes | {"13": g.animate_node(5, face=False, pose_video=[drawn, 0], face_video=[crops, 0])}
    graph["17"] = g.vhs([g.animate_segment(graph, "13", 14, seed=42), 0], "wan22_animate_pose_from_video")
    rec.run("animate_pose_from_video", graph)


def record_sam3(rec: Recorder) -> None:
    """Animate replace from a video alone: SDPose's pose and face, SAM 3.1's mask of the person, the scene."""
    rec.write("object_info_sam3_nodes.json", rec.server.object_info(["CheckpointLoaderSimple", "SAM3_VideoTrack", "SAM3_TrackToMask"]))
    upload_animate_inputs(rec)
    rec.upload("sam3_clip_3.mp4", m.video_file("mp4", "libx264", 3, 16, width=96, height=64))
    nodes, _, drawn, crops = g.sdpose(["10", 0], 30)
    masked, mask = g.person_mask(["10", 0], 40)
    graph = g.animate_base("sam3_clip_3.mp4", None) | nodes | masked | {
        "13": g.animate_node(5, face=False, pose_video=[drawn, 0], face_video=[crops, 0], background_video=["10", 0], character_mask=[mask, 0])
    }  # fmt: skip
    graph["17"] = g.vhs([g.animate_segment(graph, "13", 14, seed=42), 0], "wan22_animate_replace_from_video")
    rec.run("animate_replace_from_video", graph)


def record_interp(rec: Recorder, fixtures: Path) -> None:
    rec.upload("example.png", (rec.server.comfy_dir / "input" / "example.png").read_bytes())
    for model, short in (("rife_v4.26.safetensors", "rife"), ("film_net_fp16.safetensors", "film")):  # prepare_real.py's
        for multiplier in (2, 3, 4):
            rec.run(f"native_{short}_x{multiplier}", g.native_interpolation(model, multiplier, f"native_{short}_x{multiplier}"), frame_stats=True)
        rec.run(f"native_{short}_one_frame", g.native_interpolation(model, 2, f"native_{short}_one", one_frame=True), frame_stats=True)
    pack_file = rec.server.comfy_dir / "custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife/rife49.pth"
    target = fixtures / "frame_interpolation" / "rife49_pack_layout.pth"
    if not target.exists() and not pack_file.exists():  # the pack is no longer installed by install.sh
        print(f"skipped  native_rife_error_pack_checkpoint: neither {target} nor the pack's {pack_file}")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.write_bytes(pack_file.read_bytes())
    rec.run("native_rife_error_pack_checkpoint", g.native_interpolation("rife49_pack_layout.pth", 2, "native_err"))


def record_easycache(rec: Recorder) -> None:
    rec.upload(g.REF, m.png(96, 64, (200, 120, 40)))
    default = {"reuse_threshold": 0.2, "start_percent": 0.15, "end_percent": 0.95}
    logs = {}
    for label, graph in {
        "easycache_ti2v5b_off": g.easycache_ti2v(20, None, "wan22_ec_off"),
        "easycache_ti2v5b": g.easycache_ti2v(20, default | {"verbose": False}, "wan22_ec"),
        "easycache_ti2v5b_verbose": g.easycache_ti2v(20, default | {"verbose": True}, "wan22_ec_verbose"),
        "easycache_t2v": g.easycache_t2v(20, default | {"verbose": False}, "wan22_ec_t2v"),
    }.items():
        run, _ = rec.run(label, graph)
        logs[label] = {"seconds": run.seconds, "server_log": run.log.splitlines()}
    rec.write("easycache_server_log.json", logs)


def record_custom(rec: Recorder, work: Path, strict: bool) -> dict:
    """Path-reading VHS nodes with paths in and out of the input folder, SaveLatent, CheckpointSave, PruneOutputs."""
    outside = work / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "clip.mp4").write_bytes(m.video_file("mp4", "libx264", 5, 16))
    (outside / "tone.wav").write_bytes(m.audio_file("wav", "pcm_s16le", 0.5, 16000, 1))
    (outside / "frame.png").write_bytes(m.png())
    rec.upload("in_input.mp4", m.video_file("mp4", "libx264", 5, 16))
    input_dir, comfy_input = rec.server.dirs["input"], rec.server.comfy_dir / "input"
    video = {"force_rate": 0, "custom_width": 0, "custom_height": 0, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1}
    plans = {
        "VHS_LoadVideoPath, a file outside the input folder": g.node("VHS_LoadVideoPath", video=str(outside / "clip.mp4"), **video),
        "VHS_LoadVideoPath, a file of the input folder (absolute)": g.node("VHS_LoadVideoPath", video=str(input_dir / "in_input.mp4"), **video),
        "VHS_LoadVideoPath, a URL (nothing listens there)": g.node("VHS_LoadVideoPath", video="http://127.0.0.1:9/clip.mp4", **video),
        "VHS_LoadVideoPath, a missing file": g.node("VHS_LoadVideoPath", video=str(outside / "missing.mp4"), **video),
        "VHS_LoadVideoPath, ComfyUI's input/example.png (absolute, inside ComfyUI's folder)":
            g.node("VHS_LoadVideoPath", video=str(comfy_input / "example.png"), **video),
        "VHS_LoadVideoPath, 'input/example.png' (relative to ComfyUI's folder)": g.node("VHS_LoadVideoPath", video="input/example.png", **video),
        "VHS_LoadImagesPath, a folder outside the input folder": g.node("VHS_LoadImagesPath", directory=str(outside)),
        "VHS_LoadImagesPath, ComfyUI's own input/ folder (absolute)": g.node("VHS_LoadImagesPath", directory=str(comfy_input)),
        "VHS_LoadImagesPath, 'input' (relative to ComfyUI's folder)": g.node("VHS_LoadImagesPath", directory="input"),
        "VHS_LoadAudio, a file outside the input folder": g.node("VHS_LoadAudio", audio_file=str(outside / "tone.wav"), seek_seconds=0, duration=0),
    }
    shown_output = {"VHS_LoadVideoPath": 1, "VHS_LoadImagesPath": 2, "VHS_LoadAudio": 1}  # frame count, image count, duration
    cases = {}
    for title, loader in plans.items():
        graph = {"1": loader, "2": g.node("PreviewAny", source=["1", shown_output[loader["class_type"]]])}
        run, probes = rec.run(None, graph)
        cases[title] = rec.case(run, probes, {"2": "shown"})
    if not strict:
        graph = {"1": g.node("EmptyLatentImage", width=64, height=64, batch_size=1), "2": g.node("SaveLatent", samples=["1", 0], filename_prefix="latents/x")}
        run, probes = rec.run(None, graph)
        cases["SaveLatent"] = rec.case(run, probes)
        written = {}
        for prefix, prune in (("keep_me", False), ("prune_me", True)):
            graph = {"1": g.node("EmptyImage", width=64, height=64, batch_size=5, color=0), "2": g.node("LoadAudio", audio="tone_1s_48k_stereo.wav"),
                     "3": g.vhs(["1", 0], prefix, audio=["2", 0])}  # fmt: skip
            if prune:
                graph["4"] = g.node("VHS_PruneOutputs", filenames=["3", 0], options="Intermediate")
            run, probes = rec.run(None, graph)
            written[prefix] = sorted(p.name for p in rec.server.dirs["output"].glob(f"{prefix}_*"))
        cases["VHS_PruneOutputs (Intermediate) after a VHS_VideoCombine with audio"] = rec.case(run, probes) | {
            "files_left_without_PruneOutputs (prefix keep_me)": written["keep_me"], "files_left_with_PruneOutputs": written["prune_me"]}
        cases["CheckpointSave (queued behind a long prompt, deleted from the queue before it ran)"] = checkpoint_save_validation(rec)
    return cases


def checkpoint_save_validation(rec: Recorder) -> dict:
    """Only /prompt's answer for CheckpointSave: it would write a 6.7 GB checkpoint, so it never runs.

    A long text-free prompt (FILM, 20 frames ×8 at 256×256) keeps the queue busy; the CheckpointSave prompt
    is queued behind it, deleted from the queue, and the long one is interrupted."""
    blocker = {
        "1": g.node("EmptyImage", width=256, height=256, batch_size=20, color=0),
        "2": g.node("FrameInterpolationModelLoader", model_name="film_net_fp16.safetensors"),
        "3": g.node("FrameInterpolate", interp_model=["2", 0], images=["1", 0], multiplier=8),
        "4": g.node("GetImageSize", image=["3", 0]),
        "5": g.node("PreviewAny", source=["4", 2]),
    }
    blocker_id, save_id = str(uuid.uuid4()), str(uuid.uuid4())
    rec.server.queue(blocker, prompt_id=blocker_id)
    time.sleep(1.0)
    graph = g.common() | {
        "6": g.node("UNETLoader", unet_name="wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", weight_dtype="default"),
        "7": g.node("CheckpointSave", model=["6", 0], clip=["2", 0], vae=["5", 0], filename_prefix="checkpoints/x"),
    }
    for unused in ("1", "3", "4"):
        graph.pop(unused)
    status, body, _ = rec.server.queue(graph, prompt_id=save_id)
    queue = rec.server.get("/queue").json()
    deleted = rec.server.post("/queue", {"delete": [save_id]}).status_code
    rec.server.post("/interrupt", {"prompt_id": blocker_id})
    blocker_history: dict = {}
    for _ in range(240):
        if blocker_history := rec.server.get(f"/history/{blocker_id}").json():
            break
        time.sleep(0.5)
    return {"graph": graph, "prompt_response": {"status": status, "body": body},
            "queue_before_delete": {kind: [entry[1] for entry in queue[kind]] for kind in ("queue_running", "queue_pending")},
            "ids": {"blocker": blocker_id, "checkpoint_save": save_id}, "queue_delete_status": deleted,
            "history_of_the_deleted_prompt": rec.server.get(f"/history/{save_id}").json(),
            "blocker_status": blocker_history.get(blocker_id, {}).get("status", {}).get("status_str"),
            "files_in_output_checkpoints": sorted(p.name for p in (rec.server.dirs["output"] / "checkpoints").glob("*"))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=GROUPS)
    parser.add_argument("--out", type=Path, default=HERE.parent / "recordings")
    args = parser.parse_args()
    env = {name: os.environ.get(name, "") for name in ("REAL_COMFY_DIR", "REAL_COMFY_PYTHON", "REAL_VOLUME")}
    if not all(env.values()):
        sys.exit("record_media: set REAL_COMFY_DIR, REAL_COMFY_PYTHON and REAL_VOLUME (see docs/development.md)")
    comfy, python, volume = Path(env["REAL_COMFY_DIR"]), Path(env["REAL_COMFY_PYTHON"]), Path(env["REAL_VOLUME"])
    with tempfile.TemporaryDirectory(prefix="record-media-") as tmp:
        work = Path(tmp)
        fixtures = work / "fixtures"  # model files only these recordings use, registered as a second model root
        for folder in ("audio_encoders", "frame_interpolation", "checkpoints"):
            (fixtures / folder).mkdir(parents=True)
        started = time.monotonic()
        with Server(comfy, python, volume, work / "server", extra_models={f: fixtures / f for f in ("audio_encoders", "frame_interpolation", "checkpoints")}) as server:
            rec = Recorder(server, args.out, work)
            print(f"ComfyUI answering on port {server.port} after {time.monotonic() - started:.1f} s", flush=True)
            if "object_info" in args.only:
                record_object_info(rec)
            steps = {"audio": lambda: record_audio(rec, work), "s2v": lambda: record_s2v(rec, work, fixtures, volume), "vhs_audio": lambda: record_vhs_audio(rec),
                     "video": lambda: record_video(rec, work), "animate": lambda: record_animate(rec), "sdpose": lambda: record_sdpose(rec, fixtures), "sam3": lambda: record_sam3(rec),
                     "interp": lambda: record_interp(rec, fixtures), "easycache": lambda: record_easycache(rec)}  # fmt: skip
            for group in GROUPS:
                if group in steps and group in args.only:
                    steps[group]()
            if "custom" in args.only:
                rec.upload("tone_1s_48k_stereo.wav", m.audio_file("wav", "pcm_s16le", 1.0, 48000, 2))
                custom = {"VHS_STRICT_PATHS unset": record_custom(rec, work, strict=False)}
        if "custom" in args.only:
            with Server(comfy, python, volume, work / "strict", env={"VHS_STRICT_PATHS": "1"}) as server:
                rec = Recorder(server, args.out, work)
                custom["VHS_STRICT_PATHS=1"] = record_custom(rec, work, strict=True)
            rec.write("custom_graphs_validation.json", custom)
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
