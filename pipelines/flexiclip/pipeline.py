"""The weight-free FlexiClip path end to end: keypoints → Bezier trajectories → mesh deformation →
rendering (spec flexiclip.md §1.2–1.6, §2.4–2.5). The Clipart nodes, the demo and the benchmark all
call this; the defaults come from :mod:`.settings`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..bezier import Trajectory, preset_trajectory
from ..deform import MeshDeformer
from ..errors import check_image, fail
from ..mesh import Mesh, build_mesh
from ..progress import StepCallback, report
from ..render import render_mesh
from ..skeleton import Skeleton
from .settings import DEFORM, DEMO_MOTION, MESH, MOTION

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets")
DEMO_IMAGE = os.path.join(EXAMPLES, "flipbook_character.png")
DEMO_KEYPOINTS = os.path.join(EXAMPLES, "flipbook_character.keypoints.json")


@dataclass
class Animation:
    """Deformed mesh vertices for every frame. ComfyUI type: ``FLIPBOOK_ANIMATION``.

    mesh: the rest :class:`~..mesh.Mesh` (texture, faces, draw order).
    vertices: [T, V, 2] float deformed vertices in px on the mesh canvas.
    trajectory: the keypoint trajectory that drove them, or None.
    """
    mesh: Mesh
    vertices: torch.Tensor
    trajectory: Trajectory | None = None

    @property
    def n_frames(self) -> int:
        return int(self.vertices.shape[0])


def triangle_area(canvas: tuple[int, int], area_256: float) -> float:
    """AniClipart states triangle areas on its 256² canvas (spec §1.3, pq20a30); keep the triangle
    count independent of the picture's size."""
    return area_256 * (max(canvas) / 256.0) ** 2


def deform_animation(mesh: Mesh, trajectory: Trajectory, *, method: str = DEFORM.method,
                     constraint_lambda: float = DEFORM.constraint_lambda, chunk: int = 64,
                     callback: StepCallback | None = None, deformer: MeshDeformer | None = None) -> Animation:
    """Solve every frame's mesh from the trajectory's keypoints (one factorisation for all frames)."""
    k = trajectory.skeleton.num_points
    if k != len(mesh.keypoint_idx):
        fail("trajectory", f"{len(mesh.keypoint_idx)} keypoints, as the mesh was built with",
             f"{k} (build the mesh and the trajectory from the same keypoints)")
    if tuple(trajectory.skeleton.canvas) != tuple(mesh.canvas):
        fail("trajectory", f"keypoints on the mesh's {mesh.canvas[1]}x{mesh.canvas[0]} canvas",
             f"a {trajectory.skeleton.canvas[1]}x{trajectory.skeleton.canvas[0]} canvas")
    deformer = deformer or MeshDeformer(mesh, method=method, constraint_lambda=constraint_lambda)
    targets = trajectory.frames()
    out = []
    for i in range(0, len(targets), chunk):
        out.append(deformer.deform(targets[i:i + chunk]))
        report(callback, min(i + chunk, len(targets)), len(targets))
    return Animation(mesh, torch.cat(out), trajectory)


def render_animation(anim: Animation, *, background=(1.0, 1.0, 1.0), out_size=None, chunk: int = 8,
                     callback: StepCallback | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [T, H, W, 3] and MASK [T, H, W], rendered in chunks of frames to bound memory."""
    imgs, masks = [], []
    t = anim.n_frames
    for i in range(0, t, chunk):
        im, m = render_mesh(anim.mesh, anim.vertices[i:i + chunk], background=background, out_size=out_size)
        imgs.append(im)
        masks.append(m)
        report(callback, min(i + chunk, t), t)
    return torch.cat(imgs), torch.cat(masks)


def animate_clipart(image: torch.Tensor, skeleton: Skeleton, *, mask: torch.Tensor | None = None,
                    preset: str = MOTION.preset, n_frames: int = MOTION.frames, amplitude: float = MOTION.amplitude,
                    loop: str = MOTION.loop, cycles: int = MOTION.cycles, seed: int = MOTION.seed,
                    method: str = DEFORM.method, constraint_lambda: float = DEFORM.constraint_lambda,
                    max_area_256: float = MESH.max_triangle_area, background=(1.0, 1.0, 1.0)):
    """One picture [H, W, 3|4] + its keypoints → (frames [T,H,W,3], mask [T,H,W], Animation).

    Mesh with the default :class:`~.settings.MeshSettings` (angle, margin, backend) and
    ``max_area_256`` px² at 256² (scaled to the picture).
    """
    # 1. Check inputs
    image = check_image("image", image)[0]
    # 2. Triangulate the silhouette with the keypoints as vertices (§1.3)
    mesh = build_mesh(image, None if mask is None else mask, skeleton,
                      max_area=triangle_area(tuple(image.shape[:2]), max_area_256))
    # 3. One cubic Bezier per keypoint (§1.4; weight-free presets, §4)
    traj = preset_trajectory(skeleton, preset, n_frames=n_frames, amplitude=amplitude, loop=loop,
                             cycles=cycles, seed=seed)
    # 4. Pose the mesh in every frame: one factorisation, all frames (§2.4)
    anim = deform_animation(mesh, traj, method=method, constraint_lambda=constraint_lambda)
    # 5. Render the textured mesh (§2.5)
    frames, alpha = render_animation(anim, background=background)
    return frames, alpha, anim


def demo_inputs(image_path: str | None = None):
    """The shipped character and its keypoints, or another picture with automatic keypoints."""
    from ..io import load_rgba
    from ..keypoints import auto_keypoints, picture_alpha, skeleton_from_json

    if image_path is None:
        image = load_rgba(DEMO_IMAGE)
        with open(DEMO_KEYPOINTS) as f:
            sk = skeleton_from_json(json.load(f), "", tuple(image.shape[:2]))
    else:
        image = load_rgba(image_path)
        if not bool((image[..., 3] < 1.0).any()):       # a JPG or an opaque PNG: the figure is its ink
            image = torch.cat([image[..., :3], picture_alpha(image[..., :3])[..., None]], -1)
        sk = auto_keypoints(None, image=image)
    return image, sk


def run_demo(out: str, *, image: str | None = None, frames: int = DEMO_MOTION.frames,
             preset: str = DEMO_MOTION.preset, amplitude: float = DEMO_MOTION.amplitude, fps: float = 12.0,
             seed: int = DEMO_MOTION.seed) -> str:
    """``python -m comfyui_flipbook demo``: animate the shipped clipart on the CPU, no model."""
    from ..io import save_animation

    img, sk = demo_inputs(image)
    with torch.inference_mode():
        video, _, _ = animate_clipart(img, sk, preset=preset, n_frames=frames, amplitude=amplitude, seed=seed)
    return save_animation(video, out, fps=fps)
