"""Pose tracks: the OpenPose layout (:mod:`.layout`), OpenPose JSON in and out and the pose ->
Skeleton converter (:mod:`.openpose`), retargeting (:mod:`.retarget`), drawing (:mod:`.draw`).
Weight-free, CPU; used by Animate-X and the pose nodes, and meant for PoseAnimate."""
from .draw import render_poses
from .layout import (BODY, BODY_FEET, BODY_NAMES, COLORS, FACE0, FACE_JOINTS, HAND_EDGES, LFOOT, LHAND, LIMBS, NECK,
                     NOSE, RFOOT, RHAND, PoseSequence)
from .openpose import openpose_frames, pose_skeleton, poses_from_openpose, poses_to_openpose
from .retarget import DROP_PARTS, PART_BONES, PARTS, Rescale, bone_lengths, random_rescale, retarget

__all__ = [
    "BODY", "BODY_FEET", "BODY_NAMES", "COLORS", "DROP_PARTS", "FACE0", "FACE_JOINTS", "HAND_EDGES", "LFOOT", "LHAND",
    "LIMBS", "NECK", "NOSE", "PARTS", "PART_BONES", "PoseSequence", "RFOOT", "RHAND", "Rescale", "bone_lengths",
    "openpose_frames", "pose_skeleton", "poses_from_openpose", "poses_to_openpose", "random_rescale", "render_poses",
    "retarget",
]
