"""Pose nodes: OpenPose/DWPose keypoints in, retargeting (Animate-X's EPI realign + rescale), rendering."""
from __future__ import annotations

from ..pipelines import budget, pose as P
from ..pipelines.errors import fail
from ._comfy import (FileList, check_interrupted, file_signature, input_image_path, list_input_files,
                     progress_callback)
from . import widgets as W
from .types import POSES

CAT = "Flipbook/Pose"
DROP_CHOICES = list(P.DROP_PARTS)


class FlipbookPoseFromKeypoints:
    DESCRIPTION = ("OpenPose/DWPose keypoints (POSE_KEYPOINT of comfyui_controlnet_aux's DWPose or OpenPose "
                   "preprocessor) as a pose sequence: 18 body points, feet, hands and face per frame.")
    CATEGORY = CAT
    FUNCTION = "convert"
    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)
    OUTPUT_TOOLTIPS = ("One pose per frame in canvas pixels; undetected points are marked missing.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "OpenPose JSON frames from a DWPose/OpenPose estimator."}),
            "person": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Which detected person (Animate-X keeps person 0)."}),
            "min_confidence": W.min_confidence(0.3, "Points below this confidence count as missing (Animate-X uses 0.3)."),
        }}

    def convert(self, pose_keypoint, person, min_confidence):
        return (P.poses_from_openpose(pose_keypoint, person=person, threshold=min_confidence),)


def looks_like_pose_file(path: str) -> bool:
    """An OpenPose JSON file (frames with "people"), judged from its first 64 KiB."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536).decode("utf-8", errors="ignore").lstrip()
    except OSError:
        return False
    return head[:1] in ("[", "{") and '"people"' in head


def read_pose_file(path: str, name: str) -> list[dict]:
    """The frames of an OpenPose JSON file; a picture, another JSON file or garbage is refused by name."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except UnicodeDecodeError:
        fail("file", "an OpenPose JSON text file", f"{name!r}, which is not text (a picture?): the wrong kind of file")
    frames = P.openpose_frames(text, source=f"file {name}")
    if not all("people" in f for f in frames):
        keys = sorted(next(f for f in frames if "people" not in f))[:6]
        fail("file", "an OpenPose pose file (frames with \"people\")",
             f"{name!r} with keys {keys}: the wrong kind of file (Keypoints (JSON) reads keypoint files)")
    return frames


class FlipbookLoadPoseKeypoints:
    DESCRIPTION = ("Loads an OpenPose JSON file (a list of frames as POSE_KEYPOINT) from ComfyUI's input folder; "
                   "the pack ships animatex_dance_poses.json (a dance) and flipbook_character_pose.json.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = (POSES, "POSE_KEYPOINT")
    RETURN_NAMES = ("poses", "pose_keypoint")
    OUTPUT_TOOLTIPS = ("The poses of the file.", "The file's frames as POSE_KEYPOINT, for other pose nodes.")

    @classmethod
    def INPUT_TYPES(cls):
        files = list_input_files((".json",), accept=looks_like_pose_file) or FileList(["animatex_dance_poses.json"])
        default = "animatex_dance_poses.json" if "animatex_dance_poses.json" in files else files[0]
        return {"required": {
            "file": (files, {"default": default, "tooltip": "An OpenPose JSON file in ComfyUI's input folder."}),
            "person": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Which person of each frame."}),
            "min_confidence": W.min_confidence(0.3, "Points below this confidence count as missing (Animate-X: 0.3)."),
            "start_frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "First frame to use."}),
            "every_nth": W.every_nth("Use every n-th frame (Animate-X uses 2 for 30 fps videos)."),
            "max_frames": W.max_frames("At most this many frames (0: all)."),
        }}

    @classmethod
    def IS_CHANGED(cls, file, **_):
        return file_signature(file)

    def load(self, file, person, min_confidence, start_frame, every_nth, max_frames):
        frames = read_pose_file(input_image_path(file), file)
        frames = frames[start_frame::every_nth]
        if max_frames:
            frames = frames[:max_frames]
        if not frames:
            fail("start_frame", "a first frame inside the file", f"{start_frame}")
        return (P.poses_from_openpose(frames, person=person, threshold=min_confidence), frames)


class FlipbookPoseRetarget:
    DESCRIPTION = ("Retargets driving poses to a character (Animate-X's explicit pose indicator, EPI, used as a tool): "
                   "realigns them to the reference pose's bone lengths and place (neck on neck), then rescales "
                   "head / neck / shoulders / arms / torso / legs, drops parts, or draws a random EPI-style "
                   "rescale with a seed. Non-human proportions (big heads, short legs) come from the reference pose "
                   "or the scales.")
    CATEGORY = CAT
    FUNCTION = "retarget"
    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)
    OUTPUT_TOOLTIPS = ("The driving motion with the character's proportions, on the reference's canvas.",)

    @classmethod
    def INPUT_TYPES(cls):
        def scale(tip):
            return ("FLOAT", {"default": 1.0, "min": 0.1, "max": 4.0, "step": 0.01, "tooltip": tip})

        return {"required": {
            "poses": (POSES, {"tooltip": "Driving poses (from a dance video's DWPose keypoints)."}),
            "head": scale("Head size (eyes and ears around the nose, face landmarks) after realignment."),
            "neck": scale("Neck length (neck to nose)."),
            "shoulders": scale("Shoulder width (neck to each shoulder)."),
            "arms": scale("Upper arm and forearm lengths."),
            "torso": scale("Torso length (neck to hips)."),
            "legs": scale("Thigh, shin and foot lengths."),
            "drop": (DROP_CHOICES, {"default": "none", "tooltip": "Remove a part from every frame (characters without arms, legs, ...)."}),
            "offset_x": ("FLOAT", {"default": 0.0, "min": -4096.0, "max": 4096.0, "step": 1.0, "tooltip": "Shift right, in pixels."}),
            "offset_y": ("FLOAT", {"default": 0.0, "min": -4096.0, "max": 4096.0, "step": 1.0, "tooltip": "Shift down, in pixels."}),
            "randomize": ("BOOLEAN", {"default": False, "tooltip": "Multiply the scales by a random EPI-style rescale (and maybe drop a part)."}),
            "seed": W.seed(0, "Seed of the random rescale."),
            "probability": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Chance that the random rescale applies (the paper's lambda; 1.0 was best on A2Bench)."}),
            "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.9, "step": 0.01,
                                   "tooltip": "Random part scales are drawn from 1 +- strength (the head wider)."}),
        }, "optional": {
            "reference_pose": (POSES, {"tooltip": "The character's pose (first frame used). Without it, only the scales apply."}),
        }}

    def retarget(self, poses, head, neck, shoulders, arms, torso, legs, drop, offset_x, offset_y, randomize, seed,
                 probability, strength, reference_pose=None):
        parts = {"head": head, "neck": neck, "shoulders": shoulders, "arms": arms, "torso": torso, "legs": legs}
        drops = () if drop == "none" else (drop,)
        if randomize:
            r = P.random_rescale(seed, probability=probability, strength=strength)
            parts = {k: v * getattr(r, k) for k, v in parts.items()}
            drops = drops + r.drop
        return (P.retarget(poses, reference_pose, P.Rescale(drop=drops, **parts), offset=(offset_x, offset_y)),)


class FlipbookPoseRender:
    DESCRIPTION = ("Draws poses as skeleton images. Default colours are Animate-X's (red and blue swapped, as its "
                   "pose images are); 'controlnet' gives ControlNet/comfyui_controlnet_aux colours.")
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("One skeleton image per frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "poses": (POSES, {"tooltip": "Poses to draw."}),
            "width": ("INT", {"default": 512, "min": 16, "max": 8192, "step": 8, "tooltip": "Image width (the pose canvas is stretched to it)."}),
            "height": ("INT", {"default": 768, "min": 16, "max": 8192, "step": 8, "tooltip": "Image height."}),
            "colors": (["animatex", "controlnet"], {"default": "animatex",
                                                    "tooltip": "animatex: the released model's convention (R/B swapped); controlnet: ControlNet's."}),
            "hands": ("BOOLEAN", {"default": True, "tooltip": "Draw hands (Animate-X does)."}),
            "feet": ("BOOLEAN", {"default": True, "tooltip": "Draw the ankle-to-foot limbs (Animate-X does)."}),
            "face": ("BOOLEAN", {"default": False, "tooltip": "Draw face landmarks (Animate-X does not)."}),
        }}

    def render(self, poses, width, height, colors, hands, feet, face):
        n = getattr(poses, "frames", 1)
        budget.check("width / height", budget.frames_bytes(n, height, width) + width * height * 3,
                     f"{n} pose images of {width}x{height}")
        return (P.render_poses(poses, width, height, hands=hands, feet=feet, face=face, colors=colors,
                               callback=progress_callback(n, "pose render"), check=check_interrupted),)


class FlipbookPoseToKeypoints:
    DESCRIPTION = "A pose sequence as OpenPose JSON (POSE_KEYPOINT), e.g. for ControlNet pose renderers."
    CATEGORY = CAT
    FUNCTION = "convert"
    RETURN_TYPES = ("POSE_KEYPOINT",)
    RETURN_NAMES = ("pose_keypoint",)
    OUTPUT_TOOLTIPS = ("OpenPose JSON frames in pixel coordinates.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"poses": (POSES, {"tooltip": "Poses to convert."})}}

    def convert(self, poses):
        return (P.poses_to_openpose(poses),)


NODE_CLASS_MAPPINGS = {
    "FlipbookPoseFromKeypoints": FlipbookPoseFromKeypoints,
    "FlipbookLoadPoseKeypoints": FlipbookLoadPoseKeypoints,
    "FlipbookPoseRetarget": FlipbookPoseRetarget,
    "FlipbookPoseRender": FlipbookPoseRender,
    "FlipbookPoseToKeypoints": FlipbookPoseToKeypoints,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookPoseFromKeypoints": "Flipbook Pose From Keypoints",
    "FlipbookLoadPoseKeypoints": "Flipbook Load Pose Keypoints (JSON)",
    "FlipbookPoseRetarget": "Flipbook Pose Retarget (EPI)",
    "FlipbookPoseRender": "Flipbook Pose Render",
    "FlipbookPoseToKeypoints": "Flipbook Pose To Keypoints",
}
