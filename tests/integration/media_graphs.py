"""The API-format graphs record_media.py sends to the real ComfyUI (64×64, a few frames, tiny models).

Node ids are strings as in ComfyUI's API format; a link is ``[node_id, output_index]``. The prompt
texts are those of the shared recordings (``s2v_api.json``), so a server that already encoded them
serves them from its cache.
"""

from __future__ import annotations

POSITIVE = "a cat walks slowly along the beach at sunset, cinematic, detailed"
NEGATIVE = "blurry, low quality, worst quality, static, overexposed, subtitles, jpeg artifacts, ugly, deformed, extra fingers"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
S2V = "wan2.2_s2v_14B_fp8_scaled.safetensors"
WAV2VEC2 = "wav2vec2_large_english_fp16.safetensors"
ANIMATE = "wan2.2_animate_14B_bf16.safetensors"
REF = "media_ref.png"


def node(class_type: str, **inputs: object) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def common(ref: str = REF, vae: str = "wan_2.1_vae.safetensors") -> dict:
    """Nodes 1-5: reference image, text encoder, the two prompt texts, VAE."""
    return {
        "1": node("LoadImage", image=ref),
        "2": node("CLIPLoader", clip_name=TEXT_ENCODER, type="wan", device="default"),
        "3": node("CLIPTextEncode", text=POSITIVE, clip=["2", 0]),
        "4": node("CLIPTextEncode", text=NEGATIVE, clip=["2", 0]),
        "5": node("VAELoader", vae_name=vae),
    }


def vhs(images: list, prefix: str, fps: float = 16, audio: list | None = None, fmt: str = "video/h264-mp4", **extra: object) -> dict:
    """VHS_VideoCombine with the widgets the format adds (pix_fmt, crf, save_metadata, trim_to_audio)."""
    widgets = {
        "video/h264-mp4": {"pix_fmt": "yuv420p", "crf": 19, "save_metadata": True, "trim_to_audio": False},
        "video/h265-mp4": {"pix_fmt": "yuv420p10le", "crf": 22, "save_metadata": True},
        "video/webm": {"pix_fmt": "yuv420p", "crf": 20, "save_metadata": True, "trim_to_audio": False},
    }[fmt]
    inputs = {"images": images, "frame_rate": fps, "loop_count": 0, "filename_prefix": prefix, "format": fmt,
              "pingpong": False, "save_output": True, **widgets, **extra}  # fmt: skip
    if audio is not None:
        inputs["audio"] = audio
    return {"class_type": "VHS_VideoCombine", "inputs": inputs}


def sampler(model: list, cond: str, seed: int, steps: int = 2) -> dict:
    """KSampler on the (positive, negative, latent) outputs 0-2 of node ``cond``."""
    return node("KSampler", seed=seed, steps=steps, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0,
                model=model, positive=[cond, 0], negative=[cond, 1], latent_image=[cond, 2])  # fmt: skip


# --- audio -------------------------------------------------------------------------------------------
def load_and_save_audio(name: str, prefix: str) -> dict:
    return {"1": node("LoadAudio", audio=name), "2": node("SaveAudio", audio=["1", 0], filename_prefix=prefix)}


def s2v_segments(audio: str, lengths: list[int], prefix: str, encoder: str = WAV2VEC2) -> dict:
    """S2V: WanSoundImageToVideo (``lengths[0]``), then one WanSoundImageToVideoExtend per further length,
    each given the concatenation of all earlier latents as ``video_latent``; one VAEDecode; VHS with the audio."""
    graph = common() | {
        "6": node("UNETLoader", unet_name=S2V, weight_dtype="default"),
        "7": node("AudioEncoderLoader", audio_encoder_name=encoder),
        "8": node("LoadAudio", audio=audio),
        "9": node("AudioEncoderEncode", audio_encoder=["7", 0], audio=["8", 0]),
        "10": node("WanSoundImageToVideo", positive=["3", 0], negative=["4", 0], vae=["5", 0], width=64, height=64, length=lengths[0],
                   batch_size=1, audio_encoder_output=["9", 0], ref_image=["1", 0]),  # fmt: skip
        "11": sampler(["6", 0], "10", seed=42),
    }
    latent = ["11", 0]  # all latents so far
    for k, length in enumerate(lengths[1:], start=1):
        ext, ks, cat = str(10 + 4 * k), str(11 + 4 * k), str(12 + 4 * k)
        graph[ext] = node("WanSoundImageToVideoExtend", positive=["3", 0], negative=["4", 0], vae=["5", 0], length=length,
                          video_latent=latent, audio_encoder_output=["9", 0], ref_image=["1", 0])  # fmt: skip
        graph[ks] = sampler(["6", 0], ext, seed=42 + k)
        graph[cat] = node("LatentConcat", samples1=latent, samples2=[ks, 0], dim="t")
        latent = [cat, 0]
    graph["40"] = node("VAEDecode", samples=latent, vae=["5", 0])
    graph["41"] = vhs(["40", 0], prefix, audio=["8", 0])
    return graph


def frames_with_audio(count: int, audio: str, prefix: str, fmt: str = "video/h264-mp4", **extra: object) -> dict:
    """``count`` plain 64×64 frames (EmptyImage) into VHS at 16 fps with the audio of ``audio``."""
    return {
        "1": node("EmptyImage", width=64, height=64, batch_size=count, color=0x3366CC),
        "2": node("LoadAudio", audio=audio),
        "3": vhs(["1", 0], prefix, audio=["2", 0], fmt=fmt, **extra),
    }


# --- video inputs ------------------------------------------------------------------------------------
def shown(graph: dict, first_id: int, links: dict[str, list]) -> dict:
    """Add one PreviewAny per link (its value lands in history as ``text``); returns id -> what."""
    names = {}
    for offset, (what, link) in enumerate(links.items()):
        graph[str(first_id + offset)] = node("PreviewAny", source=link)
        names[str(first_id + offset)] = what
    return names


def load_video_components(file: str, prefix: str) -> tuple[dict, dict]:
    graph = {
        "1": node("LoadVideo", file=file),
        "2": node("GetVideoComponents", video=["1", 0]),
        "3": node("GetImageSize", image=["2", 0]),
        "10": vhs(["2", 0], prefix, fps=["2", 2], audio=["2", 1]),
    }
    names = shown(graph, 4, {"width": ["3", 0], "height": ["3", 1], "frames": ["3", 2], "fps": ["2", 2], "bit_depth": ["2", 3],
                             "audio": ["2", 1]})  # fmt: skip
    return graph, names


def vhs_load_video(file: str, prefix: str, **options: object) -> tuple[dict, dict]:
    settings = {"force_rate": 0, "custom_width": 0, "custom_height": 0, "frame_load_cap": 0, "skip_first_frames": 0,
                "select_every_nth": 1, "format": "None"} | options  # fmt: skip
    graph = {
        "1": node("VHS_LoadVideo", video=file, **settings),
        "2": node("GetImageSize", image=["1", 0]),
        "10": vhs(["1", 0], prefix, audio=["1", 2]),
    }
    names = shown(graph, 3, {"frame_count": ["1", 1], "video_info": ["1", 3], "width": ["2", 0], "height": ["2", 1], "frames": ["2", 2]})
    return graph, names


# --- Animate -----------------------------------------------------------------------------------------
def animate_base(pose: str, face: str | None) -> dict:
    graph = common() | {
        "6": node("UNETLoader", unet_name=ANIMATE, weight_dtype="default"),
        "7": node("CLIPVisionLoader", clip_name="clip_vision_h.safetensors"),
        "8": node("CLIPVisionEncode", clip_vision=["7", 0], image=["1", 0], crop="none"),
        "9": node("LoadVideo", file=pose),
        "10": node("GetVideoComponents", video=["9", 0]),
    }
    if face:
        graph |= {"11": node("LoadVideo", file=face), "12": node("GetVideoComponents", video=["11", 0])}
    return graph


def animate_node(length: int, face: bool, offset: object = 0, **extra: object) -> dict:
    inputs = {"positive": ["3", 0], "negative": ["4", 0], "vae": ["5", 0], "width": 64, "height": 64, "length": length, "batch_size": 1,
              "clip_vision_output": ["8", 0], "reference_image": ["1", 0], "pose_video": ["10", 0], "continue_motion_max_frames": 5,
              "video_frame_offset": offset, **extra}  # fmt: skip
    if face:
        inputs["face_video"] = ["12", 0]
    return {"class_type": "WanAnimateToVideo", "inputs": inputs}


def animate_segment(graph: dict, anim: str, first: int, seed: int) -> str:
    """KSampler -> TrimVideoLatent(trim_latent) -> VAEDecode after WanAnimateToVideo ``anim``; returns the decode id."""
    ks, trim, dec = str(first), str(first + 1), str(first + 2)
    graph[ks] = sampler(["6", 0], anim, seed=seed)
    graph[trim] = node("TrimVideoLatent", samples=[ks, 0], trim_amount=[anim, 3])
    graph[dec] = node("VAEDecode", samples=[trim, 0], vae=["5", 0])
    return dec


def animate_outputs(graph: dict, anim: str, first: int) -> dict:
    return shown(graph, first, {f"{anim}.trim_latent": [anim, 3], f"{anim}.trim_image": [anim, 4], f"{anim}.video_frame_offset": [anim, 5]})


# --- SDPose preprocessing ---------------------------------------------------------------------------
SDPOSE = "sdpose_wholebody_fp16.safetensors"


def sdpose(frames: list, first: int, checkpoint: str = SDPOSE) -> tuple[dict, str, str, str]:
    """CheckpointLoaderSimple -> SDPoseKeypointExtractor -> SDPoseDrawKeypoints, and SDPoseFaceBBoxes ->
    CropByBBoxes on ``frames``, as worker/tasks/pose.py adds them; returns (nodes, keypoints, pose, faces) ids."""
    ids = [str(first + n) for n in range(5)]
    loader, keypoints, drawn, boxes, crops = ids
    nodes = {
        loader: node("CheckpointLoaderSimple", ckpt_name=checkpoint),
        keypoints: node("SDPoseKeypointExtractor", model=[loader, 0], vae=[loader, 2], image=frames, batch_size=16),
        drawn: node("SDPoseDrawKeypoints", keypoints=[keypoints, 0], draw_body=True, draw_hands=True, draw_face=True, draw_feet=False,
                    stick_width=4, face_point_size=3, score_threshold=0.3, draw_head=True),
        boxes: node("SDPoseFaceBBoxes", keypoints=[keypoints, 0], scale=1.5, force_square=True),
        crops: node("CropByBBoxes", image=frames, bboxes=[boxes, 0], output_width=512, output_height=512, padding=0, keep_aspect="stretch"),
    }  # fmt: skip
    return nodes, keypoints, drawn, crops


SAM31 = "sam3.1_multiplex_fp16.safetensors"


def person_mask(frames: list, first: int) -> tuple[dict, str]:
    """CheckpointLoaderSimple (SAM 3.1) -> CLIPTextEncode "person" -> SAM3_VideoTrack -> SAM3_TrackToMask on
    ``frames``, as worker/tasks/mask.py adds them; returns (nodes, the mask's id)."""
    loader, text, track, mask = (str(first + n) for n in range(4))
    nodes = {
        loader: node("CheckpointLoaderSimple", ckpt_name=SAM31),
        text: node("CLIPTextEncode", text="person", clip=[loader, 1]),
        track: node("SAM3_VideoTrack", model=[loader, 0], images=frames, conditioning=[text, 0], detect_interval=1,
                    detection_threshold=0.5, max_objects=1),
        mask: node("SAM3_TrackToMask", track_data=[track, 0], object_indices=""),
    }  # fmt: skip
    return nodes, mask


# --- frame interpolation, step caching ---------------------------------------------------------------
def three_frames() -> dict:
    """The input of the recorded rife_* runs: example.png at 64×64 (A), inverted (B), batch A, B, A."""
    return {
        "1": node("LoadImage", image="example.png"),
        "2": node("ImageScale", image=["1", 0], upscale_method="bilinear", width=64, height=64, crop="disabled"),
        "3": node("ImageInvert", image=["2", 0]),
        "4": node("ImageBatch", image1=["2", 0], image2=["3", 0]),
        "5": node("ImageBatch", image1=["4", 0], image2=["2", 0]),
    }


def native_interpolation(model: str, multiplier: int, prefix: str, one_frame: bool = False) -> dict:
    graph = three_frames() | {
        "6": node("FrameInterpolationModelLoader", model_name=model),
        "7": node("FrameInterpolate", interp_model=["6", 0], images=["2", 0] if one_frame else ["5", 0], multiplier=multiplier),
        "8": vhs(["7", 0], prefix, fps=8.0, save_metadata=False),
    }
    return graph


def easycache_ti2v(steps: int, cache: dict | None, prefix: str) -> dict:
    graph = common(vae="wan2.2_vae.safetensors") | {
        "6": node("UNETLoader", unet_name="wan2.2_ti2v_5B_fp16.safetensors", weight_dtype="default"),
        "7": node("Wan22ImageToVideoLatent", vae=["5", 0], start_image=["1", 0], width=64, height=64, length=5, batch_size=1),
        "8": node("ModelSamplingSD3", model=["6", 0], shift=8.0),
        "10": node("KSampler", model=["9", 0] if cache else ["8", 0], seed=42, steps=steps, cfg=5.0, sampler_name="uni_pc",
                   scheduler="simple", positive=["3", 0], negative=["4", 0], latent_image=["7", 0], denoise=1.0),  # fmt: skip
        "11": node("VAEDecode", samples=["10", 0], vae=["5", 0]),
        "12": vhs(["11", 0], prefix, fps=24.0),
    }
    if cache:
        graph["9"] = node("EasyCache", model=["8", 0], **cache)
    return graph


def easycache_t2v(steps: int, cache: dict | None, prefix: str) -> dict:
    """The T2V two-expert graph (KSamplerAdvanced high 0 -> steps/2, low -> end), EasyCache on both experts when ``cache``."""
    graph = common() | {
        "6": node("UNETLoader", unet_name="wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", weight_dtype="default"),
        "7": node("UNETLoader", unet_name="wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", weight_dtype="default"),
        "8": node("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1),
        "9": node("ModelSamplingSD3", model=["6", 0], shift=8.0),
        "10": node("ModelSamplingSD3", model=["7", 0], shift=8.0),
    }
    if cache:
        graph |= {"11": node("EasyCache", model=["9", 0], **cache), "12": node("EasyCache", model=["10", 0], **cache)}
    high, low = ("11", "12") if cache else ("9", "10")
    half = steps // 2
    for nid, model, start, end, noise, latent in (("13", high, 0, half, "enable", ["8", 0]), ("14", low, half, 10000, "disable", ["13", 0])):
        graph[nid] = node("KSamplerAdvanced", model=[model, 0], add_noise=noise, noise_seed=42, steps=steps, cfg=3.5, sampler_name="euler",
                          scheduler="simple", positive=["3", 0], negative=["4", 0], latent_image=latent, start_at_step=start,
                          end_at_step=end, return_with_leftover_noise="enable" if noise == "enable" else "disable")  # fmt: skip
    graph["15"] = node("VAEDecode", samples=["14", 0], vae=["5", 0])
    graph["16"] = vhs(["15", 0], prefix)
    graph.pop("1")  # text to video: no reference image
    return graph
