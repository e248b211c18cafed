"""Every node class the double runs, by class name, and how the executor treats some of them."""

from __future__ import annotations

from . import audio_nodes, control_nodes, interp_nodes, node_impls, pose_nodes, save_nodes, video_nodes
from .values import NodeFunction

#: class_type -> implementation.
NODE_FUNCTIONS: dict[str, NodeFunction] = {
    **node_impls.NODES,
    **audio_nodes.NODES,
    **video_nodes.NODES,
    **control_nodes.NODES,
    **interp_nodes.NODES,
    **pose_nodes.NODES,
    **save_nodes.NODES,
}

#: Classes that receive every input of the node, declared or not (VHS's ``ContainsAll`` hidden dict).
ACCEPTS_ANY_INPUT = frozenset({"VHS_VideoCombine"})

#: Classes that report progress while running (a "crash" fault fires after their first step).
PROGRESS_CLASSES = frozenset({"KSampler", "KSamplerAdvanced", "VHS_VideoCombine", "VHS_LoadVideo", "FrameInterpolate",
                              "SDPoseKeypointExtractor", "SAM3_VideoTrack"})
