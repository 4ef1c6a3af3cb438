"""Clipart nodes: the weight-free FlexiClip path (keypoints → Bezier → mesh deformation → render)."""
from __future__ import annotations

import json

import torch

from ..pipelines import bezier, budget, keypoints, pose
from ..pipelines.flexiclip import Animation, deform_animation, render_animation, triangle_area
from ..pipelines.flexiclip import settings as clip
from ..pipelines.errors import check_image
from ..pipelines.deform import METHODS
from ..pipelines.mesh import BACKENDS, build_mesh
from ..pipelines.metrics import animation_metrics
from ..pipelines.preview import draw_preview
from ._comfy import executing_node_id, progress_callback, with_animated_preview
from .image import INVERT_TIP, silhouette
from .preview_route import remember_image
from . import widgets as W
from .types import ANIMATION, MESH, SKELETON, TRAJECTORY

CAT = "Flipbook/Clipart"
KEYPOINTS_CAT = "Flipbook/Keypoints"


_EXAMPLE_POINTS = json.dumps([[256, 112], [256, 176], [256, 300], [196, 232], [140, 190], [316, 232],
                              [372, 190], [222, 372], [206, 440], [290, 372], [306, 440]])
_EXAMPLE_EDGES = json.dumps([[0, 1], [1, 2], [1, 3], [3, 4], [1, 5], [5, 6], [2, 7], [7, 8], [2, 9], [9, 10]])


def _canvas(image) -> tuple[int, int]:
    image = check_image("image", image)
    return int(image.shape[1]), int(image.shape[2])


class FlipbookKeypointsFromJSON:
    DESCRIPTION = ("Keypoints typed by hand: a JSON list of [x, y] pixel positions (or an object with "
                   "points/edges/root/names), with optional bones. Without bones, the minimum spanning tree joins them.")
    CATEGORY = KEYPOINTS_CAT
    FUNCTION = "build"
    RETURN_TYPES = (SKELETON,)
    RETURN_NAMES = ("skeleton",)
    OUTPUT_TOOLTIPS = ("Keypoints in pixels with bones and a root joint.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The picture the keypoints belong to (sets the canvas size)."}),
            "points_json": ("STRING", {"multiline": True, "default": _EXAMPLE_POINTS,
                                       "tooltip": "[[x, y], ...] in pixels (x right, y down), or {\"points\": ..., \"edges\": ..., \"root\": r}."}),
            "edges_json": ("STRING", {"multiline": True, "default": _EXAMPLE_EDGES,
                                      "tooltip": "Bones as [[i, j], ...] (0-based indices). Empty: minimum spanning tree."}),
            "normalized": ("BOOLEAN", {"default": False,
                                       "tooltip": "Points are given in 0..1 of the image size instead of pixels."}),
            "root": ("INT", {"default": -1, "min": -1, "max": 4096,
                             "tooltip": "Index of the root joint (stays still in the presets). -1: automatic (graph centre)."}),
        }}

    def build(self, image, points_json, edges_json, normalized, root):
        remember_image(executing_node_id(), image)   # the editor's picture when it is no Load Image file
        return (keypoints.skeleton_from_json(points_json, edges_json, _canvas(image),
                                             normalized=normalized, root=root),)


class FlipbookKeypointsFromPose:
    DESCRIPTION = ("Keypoints from an OpenPose/DWPose detector (POSE_KEYPOINT of comfyui_controlnet_aux). "
                   "Also returns the detected pose of every frame as tracks, to drive an animation.")
    CATEGORY = KEYPOINTS_CAT
    FUNCTION = "build"
    RETURN_TYPES = (SKELETON, TRAJECTORY)
    RETURN_NAMES = ("skeleton", "tracks")
    OUTPUT_TOOLTIPS = ("Keypoints of the chosen frame.", "Keypoints of every frame, as a trajectory.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "OpenPose JSON frames from a DWPose/OpenPose estimator."}),
            "person": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Which detected person."}),
            "frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Which frame gives the skeleton."}),
            "merge_face": ("BOOLEAN", {"default": True,
                                       "tooltip": "Average nose, eyes and ears into one head point (AniClipart's rule)."}),
            "min_confidence": W.min_confidence(0.1, "Joints below this detection confidence in the first frame are dropped."),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "Picture to fit the canvas to (default: the detector's canvas size)."}),
        }}

    def build(self, pose_keypoint, person, frame, merge_face, min_confidence, image=None):
        canvas = _canvas(image) if image is not None else None
        poses = pose.poses_from_openpose(pose_keypoint, person=person, threshold=min_confidence)
        skeleton, tracks = pose.pose_skeleton(poses, frame=frame, merge_face=merge_face, canvas=canvas,
                                              source="pose_keypoint")
        return skeleton, bezier.Trajectory(skeleton, tracks.frames, tracks=tracks)


class FlipbookAutoKeypoints:
    DESCRIPTION = ("Keypoints found automatically from the silhouette (alpha, a mask, or dark ink on white): "
                   "the medial-axis skeleton's ends and joints, plus midpoints of long branches.")
    CATEGORY = KEYPOINTS_CAT
    FUNCTION = "build"
    RETURN_TYPES = (SKELETON,)
    RETURN_NAMES = ("skeleton",)
    OUTPUT_TOOLTIPS = ("Detected keypoints with bones; the root is the skeleton's centre.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The picture; its alpha (or non-white pixels) is the silhouette."}),
            "max_keypoints": ("INT", {"default": 16, "min": 2, "max": 64,
                                      "tooltip": "At most this many keypoints (AniClipart's examples use 5-16)."}),
            "min_branch": ("FLOAT", {"default": 0.08, "min": 0.0, "max": 0.5, "step": 0.01,
                                     "tooltip": "Branches shorter than this fraction of the figure's size are pruned as noise."}),
            "invert_mask": ("BOOLEAN", {"default": True, "tooltip": INVERT_TIP}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Silhouette (e.g. Load Image's MASK) instead of the picture's alpha or ink."}),
        }}

    def build(self, image, max_keypoints, min_branch, invert_mask=True, mask=None):
        image = check_image("image", image)
        sil = silhouette(mask, image, invert_mask, max_frames=1)
        return (keypoints.auto_keypoints(sil, image=image[0], max_keypoints=max_keypoints, min_branch=min_branch),)


class FlipbookMeshBuilder:
    DESCRIPTION = ("Triangulates the picture's silhouette (grown by a margin) into a mesh whose vertices include "
                   "the keypoints, so moving keypoints bends the picture (FlexiClip/AniClipart §1.3).")
    CATEGORY = CAT
    FUNCTION = "build"
    RETURN_TYPES = (MESH,)
    RETURN_NAMES = ("mesh",)
    OUTPUT_TOOLTIPS = ("Triangle mesh with the picture as texture.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The picture to animate (RGBA keeps transparency)."}),
            "skeleton": (SKELETON, {"tooltip": "Keypoints; they become mesh vertices."}),
            "max_triangle_area": ("FLOAT", {"default": clip.MESH.max_triangle_area, "min": 2.0, "max": 5000.0, "step": 1.0,
                                            "tooltip": "Largest triangle in px² at 256² (scaled with the picture). AniClipart uses 30."}),
            "min_angle": ("FLOAT", {"default": clip.MESH.min_angle, "min": 0.0, "max": 33.0, "step": 1.0,
                                    "tooltip": "Smallest triangle angle in degrees (triangle backend). AniClipart uses 20."}),
            "margin_px": ("FLOAT", {"default": clip.MESH.margin_px, "min": 0.0, "max": 64.0, "step": 0.5,
                                    "tooltip": "Grow the silhouette by this many pixels so its edge lies inside triangles."}),
            "backend": (list(BACKENDS), {"default": clip.MESH.backend,
                                                "tooltip": "scipy: no extra dependency. triangle: Shewchuk's Triangle (pip install triangle; non-commercial licence)."}),
            "invert_mask": ("BOOLEAN", {"default": True, "tooltip": INVERT_TIP}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Silhouette, e.g. Load Image's MASK (connect it: Load Image's IMAGE has no alpha). "
                                         "Without it: the picture's alpha, else non-white pixels."}),
        }}

    def build(self, image, skeleton, max_triangle_area, min_angle, margin_px, backend, invert_mask=True, mask=None):
        image = check_image("image", image)
        if tuple(skeleton.canvas) != tuple(image.shape[1:3]):
            skeleton = skeleton.scaled_to(tuple(image.shape[1:3]))
        m = silhouette(mask, image, invert_mask, max_frames=1)
        m = None if m is None else m[0]
        area = triangle_area(tuple(image.shape[1:3]), max_triangle_area)
        return (build_mesh(image[0], m, skeleton, max_area=area, min_angle=min_angle,
                           margin_px=margin_px, backend=backend),)


class FlipbookBezierTrajectory:
    DESCRIPTION = ("One cubic Bezier curve per keypoint (AniClipart/FlexiClip). Presets make weight-free motion "
                   "that grows with distance from the root; control points can be set exactly with JSON.")
    CATEGORY = CAT
    FUNCTION = "build"
    RETURN_TYPES = (TRAJECTORY,)
    RETURN_NAMES = ("trajectory",)
    OUTPUT_TOOLTIPS = ("Keypoint positions for every frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "skeleton": (SKELETON, {"tooltip": "Keypoints (the curves start there)."}),
            "frames": W.frames(clip.MOTION.frames, "Number of frames (AniClipart: 24)."),
            "preset": (list(bezier.PRESETS), {"default": clip.MOTION.preset,
                                              "tooltip": "still: no motion. sway: limbs swing to one side and back. wave: "
                                                         "S-shaped swing, neighbours out of phase. random: seeded random curves."}),
            "amplitude": ("FLOAT", {"default": clip.MOTION.amplitude, "min": 0.0, "max": 0.5, "step": 0.005,
                                    "tooltip": "Largest control-point offset, as a fraction of the picture size."}),
            "loop": (list(bezier.LOOP_MODES), {"default": clip.MOTION.loop,
                                               "tooltip": "loop: seamless cycle. ping-pong: there and back. once: start to end. "
                                                          "aniclipart: the official schedule (N/(2·cycles) poses, forward+back, repeated)."}),
            "cycles": ("INT", {"default": clip.MOTION.cycles, "min": 1, "max": 64,
                               "tooltip": "Repetitions within the frames (AniClipart: 2)."}),
            "seed": W.seed(clip.MOTION.seed, "Seed of the random preset."),
        }, "optional": {
            "control_json": ("STRING", {"multiline": True, "default": "",
                                        "tooltip": "Override: per keypoint [[x1,y1],[x2,y2],[x3,y3]] in px, or null to keep "
                                                   "the preset; {\"relative\": true, \"control\": [...]} for offsets."}),
        }}

    def build(self, skeleton, frames, preset, amplitude, loop, cycles, seed, control_json=""):
        return (bezier.preset_trajectory(skeleton, preset, n_frames=frames, amplitude=amplitude, loop=loop,
                                         cycles=cycles, seed=seed, control_json=control_json),)


class FlipbookMeshDeform:
    DESCRIPTION = ("Poses the mesh in every frame so its keypoint vertices follow the trajectory: FlexiClip's "
                   "Poisson/Jacobian solve (factorised once per mesh), or AniClipart's ARAP.")
    CATEGORY = CAT
    FUNCTION = "deform"
    RETURN_TYPES = (ANIMATION,)
    RETURN_NAMES = ("animation",)
    OUTPUT_TOOLTIPS = ("Deformed mesh for every frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh": (MESH, {"tooltip": "Mesh from Flipbook Mesh Builder."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Keypoint positions per frame (same keypoints as the mesh)."}),
            "method": (list(METHODS), {"default": clip.DEFORM.method,
                                                              "tooltip": "poisson_bilap: FlexiClip's (LᵀL+λKᵀK) solve (smooth). poisson: "
                                                                         "standard NJF form (cusps at handles). arap: AniClipart's as-rigid-as-possible."}),
            "constraint_lambda": ("FLOAT", {"default": clip.DEFORM.constraint_lambda, "min": 1e-3, "max": 1e6, "step": 0.1,
                                            "tooltip": "Weight of the keypoint constraints. 1000 (default, weight-free rig): keypoints land on "
                                                       "the trajectory (within 0.1 px). 1: FlexiClip-faithful soft constraints (what its "
                                                       "SDS optimiser uses); keypoints then lag large moves by several px."}),
        }}

    def deform(self, mesh, trajectory, method, constraint_lambda):
        cb = progress_callback(trajectory.n_frames, "deform")
        return (deform_animation(mesh, trajectory, method=method, constraint_lambda=constraint_lambda, callback=cb),)


_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5)}


class FlipbookMeshRender:
    DESCRIPTION = ("Renders the deformed mesh with the picture as texture. Where parts overlap, the part drawn later "
                   "(higher z, then later triangle) covers the other. MASK is the rendered alpha.")
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("frames", "mask")
    OUTPUT_TOOLTIPS = ("The animation frames.", "Alpha of the character in each frame.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "animation": (ANIMATION, {"tooltip": "Deformed mesh from Flipbook Mesh Deform."}),
            "background": (list(_BACKGROUNDS), {"default": "white", "tooltip": "Colour behind the character."}),
            "scale": ("FLOAT", {"default": 1.0, "min": 0.125, "max": 4.0, "step": 0.125,
                                "tooltip": "Output size relative to the input picture."}),
        }}

    def render(self, animation: Animation, background, scale):
        h, w = animation.mesh.canvas
        size = None if scale == 1.0 else (max(1, round(h * scale)), max(1, round(w * scale)))
        oh, ow = size or (h, w)
        # outputs (RGB + alpha) of every frame, plus the working buffers of one chunk of 8 frames
        budget.check("scale", animation.n_frames * oh * ow * 16 + 8 * oh * ow * 64,
                     f"{animation.n_frames} frames of {ow}x{oh}")
        cb = progress_callback(animation.n_frames, "render")
        frames, mask = render_animation(animation, background=_BACKGROUNDS[background], out_size=size, callback=cb)
        return with_animated_preview((frames, mask), frames)


class FlipbookAnimationMetrics:
    DESCRIPTION = ("Weight-free animation metrics on the mesh trajectories: motion vitality, temporal consistency, "
                   "geometric deviation, deformation smoothness, animation energy. FlexiClip names them but gives no "
                   "formulas: these are our definitions (see the spec), in pixels of the mesh canvas.")
    CATEGORY = CAT
    FUNCTION = "measure"
    RETURN_TYPES = ("STRING", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "FLOAT")
    RETURN_NAMES = ("json", "motion_vitality", "temporal_consistency", "geometric_deviation",
                    "deformation_smoothness", "animation_energy")
    OUTPUT_TOOLTIPS = ("All metrics as JSON.", "Mean path length of a vertex (px) ↑.", "Mean jerk (px) ↓.",
                       "Distortion from rigid ×100 ↓.", "Frame-to-frame Jacobian change ×100 ↓.", "Kinetic energy ↑.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"animation": (ANIMATION, {"tooltip": "Deformed mesh from Flipbook Mesh Deform."})}}

    def measure(self, animation: Animation):
        m = animation_metrics(animation.mesh, animation.vertices)
        text = json.dumps(m, indent=1)
        keys = ("motion_vitality", "temporal_consistency", "geometric_deviation", "deformation_smoothness",
                "animation_energy")
        return {"ui": {"text": [text]}, "result": (text, *(float(m[k]) for k in keys))}


class FlipbookPreviewKeypoints:
    DESCRIPTION = "Draws keypoints (root in red), bones, the mesh and the Bezier paths over the picture."
    CATEGORY = KEYPOINTS_CAT
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("preview",)
    OUTPUT_TOOLTIPS = ("The picture with the overlays; connect it to Preview Image.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The picture to draw on."}),
            "labels": ("BOOLEAN", {"default": True, "tooltip": "Write each keypoint's index next to it."}),
        }, "optional": {
            "skeleton": (SKELETON, {"tooltip": "Keypoints and bones to draw."}),
            "mesh": (MESH, {"tooltip": "Mesh to draw."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Keypoint paths to draw."}),
            "mask": ("MASK", {"tooltip": "Load Image's MASK (1 - alpha): transparent areas are shown as a checkerboard."}),
        }}

    def draw(self, image, labels, skeleton=None, mesh=None, trajectory=None, mask=None):
        image = check_image("image", image)
        sil = silhouette(mask, image, True, max_frames=1)
        if sil is not None:
            image = torch.cat([image[:1, ..., :3], sil[..., None]], -1)
        if skeleton is None and trajectory is not None:
            skeleton = trajectory.skeleton
        return (draw_preview(image[0], skeleton, mesh=mesh, trajectory=trajectory, labels=labels),)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (
    FlipbookKeypointsFromJSON, FlipbookKeypointsFromPose, FlipbookAutoKeypoints, FlipbookMeshBuilder,
    FlipbookBezierTrajectory, FlipbookMeshDeform, FlipbookMeshRender, FlipbookAnimationMetrics,
    FlipbookPreviewKeypoints)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookKeypointsFromJSON": "Flipbook Keypoints (JSON)",
    "FlipbookKeypointsFromPose": "Flipbook Keypoints from Pose",
    "FlipbookAutoKeypoints": "Flipbook Auto Keypoints",
    "FlipbookMeshBuilder": "Flipbook Mesh Builder",
    "FlipbookBezierTrajectory": "Flipbook Bezier Trajectory",
    "FlipbookMeshDeform": "Flipbook Mesh Deform",
    "FlipbookMeshRender": "Flipbook Mesh Render",
    "FlipbookAnimationMetrics": "Flipbook Animation Metrics",
    "FlipbookPreviewKeypoints": "Flipbook Preview Keypoints",
}
