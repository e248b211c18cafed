"""Preprocessing a job's video: ``CheckpointLoaderSimple``, the SDPose nodes (``comfy_extras/nodes_sdpose.py``:
``SDPoseKeypointExtractor``, ``SDPoseDrawKeypoints``, ``SDPoseFaceBBoxes``, ``CropByBBoxes``) and SAM 3's
video tracking (``nodes_sam3.py``: ``SAM3_VideoTrack``, ``SAM3_TrackToMask``).

Shapes and structure as recorded (sdpose_pose_face_*): keypoints are one OpenPose frame per image
(``canvas_width``/``canvas_height``, one person of 18 body, 6 foot, 70 face and 21 + 21 hand points,
each ``x, y, score``), boxes one list per frame, crops one per frame that has a box. Without weights
the double puts its person where the frame is brightest (the luminance-weighted centre), so a pose
drawn from a moving clip moves with it; the drawing is white dots on black, the frame's size. SAM 3's
person is what is brighter than the frame's mean (animate_replace_from_video_*: a mask per frame, the
frame's size, values 0..1).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from . import state_dicts
from .values import Handle, Images, LazyVideo, NodeContext, NodeFunction, NodeResult, image_frames, require_model

#: The key ComfyUI's detection reads to build the SDPose heatmap head (``comfy/model_detection.py``).
HEATMAP_KEY = "model.diffusion_model.heatmap_head.conv_layers.0.weight"
#: The node's own message for a model without the head (sdpose_error_no_heatmap_head_*).
NO_HEAD = ("The provided model does not have a heatmap_head. Please use SDPose model from here "
           "https://huggingface.co/Comfy-Org/SDPose/tree/main/checkpoints.")  # fmt: skip
#: The keys ComfyUI's detection reads to tell SAM 3 (and SAM 3.1, the multiplex tracker) apart.
SAM3_KEY = "detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight"
SAM31_KEY = "detector.backbone.vision_backbone.propagation_convs.0.conv_1x1.weight"
#: Points per part, in the order of an OpenPose person.
PARTS = {"pose_keypoints_2d": 18, "foot_keypoints_2d": 6, "face_keypoints_2d": 70, "hand_right_keypoints_2d": 21,
         "hand_left_keypoints_2d": 21}  # fmt: skip


def checkpoint_loader_simple(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    """MODEL, CLIP and VAE of one checkpoint file: SDPose has no text encoder (CLIP None), SAM 3 no VAE."""
    keys = state_dicts.tensor_shapes(require_model(ctx, "checkpoints", ckpt_name))
    if SAM3_KEY in keys:
        return (Handle("MODEL", ckpt_name, ("SAM31" if SAM31_KEY in keys else "SAM3",)), Handle("CLIP", ckpt_name, ("sam3",)), None), None
    head = ("heatmap_head",) if HEATMAP_KEY in keys else ()
    return (Handle("MODEL", ckpt_name, head), None, Handle("VAE", ckpt_name)), None


def _person(frame: np.ndarray) -> dict[str, list[float]]:
    """One person around the frame's brightest part: a standing figure a third of the frame high."""
    height, width = frame.shape[:2]
    light = frame.astype(np.float64).mean(axis=2) + 1e-6
    ys, xs = np.mgrid[0:height, 0:width]
    cx, cy = float((xs * light).sum() / light.sum()), float((ys * light).sum() / light.sum())
    unit = height / 6
    angles = np.linspace(0, 2 * np.pi, 70, endpoint=False)
    offsets = {
        "pose_keypoints_2d": [(0, -1.0), (0, -0.7), (-0.3, -0.7), (-0.5, -0.3), (-0.6, 0.1), (0.3, -0.7), (0.5, -0.3),
                              (0.6, 0.1), (-0.2, 0.1), (-0.2, 0.6), (-0.2, 1.0), (0.2, 0.1), (0.2, 0.6), (0.2, 1.0),
                              (-0.08, -1.05), (0.08, -1.05), (-0.15, -1.0), (0.15, -1.0)],
        "foot_keypoints_2d": [(-0.3, 1.05), (-0.25, 1.05), (-0.2, 1.05), (0.2, 1.05), (0.25, 1.05), (0.3, 1.05)],
        "face_keypoints_2d": [(0.15 * np.cos(a), -1.0 + 0.15 * np.sin(a)) for a in angles],
        "hand_right_keypoints_2d": [(-0.6 - 0.01 * i, 0.1 + 0.01 * i) for i in range(21)],
        "hand_left_keypoints_2d": [(0.6 + 0.01 * i, 0.1 + 0.01 * i) for i in range(21)],
    }  # fmt: skip
    person = {}
    for part, points in offsets.items():
        flat: list[float] = []
        for dx, dy in points:
            flat += [float(np.clip(cx + dx * unit, 0, width - 1)), float(np.clip(cy + dy * unit, 0, height - 1)), 1.0]
        person[part] = flat
    return person


def sdpose_keypoint_extractor(
    ctx: NodeContext, model: Handle, vae: Handle, image: Images | LazyVideo, batch_size: int, bboxes: object = None
) -> NodeResult:
    if "heatmap_head" not in model.patches:
        raise ValueError(NO_HEAD)
    frames = image_frames(image)
    height, width = frames[0].shape[:2]
    for done in range(batch_size, len(frames) + batch_size, batch_size):  # one progress update per batch
        ctx.progress(min(done, len(frames)), len(frames))
    return ([{"canvas_width": width, "canvas_height": height, "people": [_person(frame)]} for frame in frames],), None


def _points(flat: list[float]) -> list[tuple[float, float, float]]:
    return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]


def sdpose_draw_keypoints(
    ctx: NodeContext, keypoints: list[dict], draw_body: bool, draw_hands: bool, draw_face: bool, draw_feet: bool,
    stick_width: int, face_point_size: int, score_threshold: float, draw_head: bool,
) -> NodeResult:  # fmt: skip
    """Black frames of the canvas size with the points whose score passes, white; 64×64 black when empty."""
    if not keypoints:
        return (Images([np.zeros((64, 64, 3), np.uint8)]),), None
    shown = {"pose_keypoints_2d": draw_body, "foot_keypoints_2d": draw_feet, "face_keypoints_2d": draw_face,
             "hand_right_keypoints_2d": draw_hands, "hand_left_keypoints_2d": draw_hands}  # fmt: skip
    pictures = []
    for frame in keypoints:
        canvas = Image.new("RGB", (frame["canvas_width"], frame["canvas_height"]))
        draw = ImageDraw.Draw(canvas)
        for person in frame["people"]:
            for part, flat in person.items():
                radius = face_point_size if part == "face_keypoints_2d" else stick_width / 2
                for x, y, score in _points(flat) if shown.get(part) else ():
                    if score >= score_threshold:
                        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 255, 255))
        pictures.append(np.asarray(canvas))
    return (Images(pictures),), None


def _face_box(points: list[tuple[float, float, float]], scale: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The face's extent grown to ``scale`` times its area, more above than below (the forehead); None when flat."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    box_w, box_h = max(xs) - min(xs), max(ys) - min(ys)
    if box_w <= 0 or box_h <= 0:
        return None
    grown_w, grown_h = box_w * np.sqrt(scale), box_h * np.sqrt(scale)
    left, right = max(min(xs) - (grown_w - box_w) / 2, 0), min(max(xs) + (grown_w - box_w) / 2, width)
    top, bottom = max(min(ys) - 3 * (grown_h - box_h) / 4, 0), min(max(ys) + (grown_h - box_h) / 4, height)
    return int(left), int(top), int(right), int(bottom)


def sdpose_face_bboxes(ctx: NodeContext, keypoints: list[dict], scale: float, force_square: bool) -> NodeResult:
    boxes = []
    for frame in keypoints:
        width, height = frame["canvas_width"], frame["canvas_height"]
        found = []
        for person in frame["people"]:
            box = _face_box(_points(person.get("face_keypoints_2d", [])), scale, width, height) if person.get("face_keypoints_2d") else None
            if box is None:
                continue
            x1, y1, x2, y2 = box
            if force_square and x2 - x1 != y2 - y1:
                side = max(x2 - x1, y2 - y1)
                x2, y2 = min(width, max(0, (x1 + x2) // 2 - side // 2) + side), min(height, max(0, (y1 + y2) // 2 - side // 2) + side)
                x1, y1 = max(0, x2 - side), max(0, y2 - side)
            found.append({"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1})
        boxes.append(found)
    return (boxes,), None


def crop_by_bboxes(
    ctx: NodeContext, image: Images | LazyVideo, bboxes: list, output_width: int, output_height: int, padding: int, keep_aspect: str = "stretch"
) -> NodeResult:  # fmt: skip
    """One crop per frame (the union of its boxes, padded), resized; frames without a box are left out."""
    frames = image_frames(image)
    if not bboxes:
        return (image,), None
    crops = []
    for index, frame in enumerate(frames):
        boxes = bboxes[min(index, len(bboxes) - 1)]
        if not boxes:
            continue
        height, width = frame.shape[:2]
        x1, y1 = max(0, min(b["x"] for b in boxes) - padding), max(0, min(b["y"] for b in boxes) - padding)
        x2 = min(width, max(b["x"] + b["width"] for b in boxes) + padding)
        y2 = min(height, max(b["y"] + b["height"] for b in boxes) + padding)
        if x2 <= x1 or y2 <= y1:
            crops.append(np.zeros((output_height, output_width, 3), np.uint8))
            continue
        piece = Image.fromarray(frame[y1:y2, x1:x2])
        if keep_aspect == "pad":
            fit = min(output_width / piece.width, output_height / piece.height)
            scaled = piece.resize((round(piece.width * fit), round(piece.height * fit)), Image.Resampling.BOX)
            canvas = Image.new("RGB", (output_width, output_height))
            canvas.paste(scaled, ((output_width - scaled.width) // 2, (output_height - scaled.height) // 2))
            crops.append(np.asarray(canvas))
        else:
            crops.append(np.asarray(piece.resize((output_width, output_height), Image.Resampling.BOX)))
    return ((Images(crops) if crops else image),), None


def sam3_video_track(
    ctx: NodeContext, images: Images | LazyVideo, model: Handle, detect_interval: int, detection_threshold: float, max_objects: int,
    initial_mask: np.ndarray | None = None, conditioning: object = None,
) -> NodeResult:  # fmt: skip
    """Track data: the person's mask per frame; progress for every frame (the recorded frames took 76 s
    each on the CPU, past ComfyUI's 0.1 s progress throttle)."""
    if conditioning is None and initial_mask is None:
        raise ValueError("Either initial_mask or conditioning must be provided")
    if initial_mask is None and "SAM31" not in model.patches:
        raise ValueError("SAM3 (non-multiplex) requires initial_mask for video tracking")
    frames = image_frames(images)
    masks = []
    for index, frame in enumerate(frames, start=1):
        light = frame.astype(np.float32).mean(axis=2)
        masks.append((light > light.mean()).astype(np.float32))
        ctx.progress(index, len(frames), slow=True)
    return ({"masks": masks, "n_frames": len(frames)},), None


def sam3_track_to_mask(ctx: NodeContext, track_data: dict, object_indices: str = "") -> NodeResult:
    return (np.stack(track_data["masks"]),), None


#: class_type -> implementation.
NODES: dict[str, NodeFunction] = {
    "CheckpointLoaderSimple": checkpoint_loader_simple,
    "SDPoseKeypointExtractor": sdpose_keypoint_extractor,
    "SDPoseDrawKeypoints": sdpose_draw_keypoints,
    "SDPoseFaceBBoxes": sdpose_face_bboxes,
    "CropByBBoxes": crop_by_bboxes,
    "SAM3_VideoTrack": sam3_video_track,
    "SAM3_TrackToMask": sam3_track_to_mask,
}
