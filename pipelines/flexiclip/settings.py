"""Defaults of the weight-free FlexiClip path (clipart): one frozen dataclass per step, used by the
pipeline's keywords and by the Clipart nodes' widgets, so that the two cannot drift."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MeshSettings:
    """Flipbook Mesh Builder (spec flexiclip.md §1.3, §4 node 4). AniClipart meshes with Triangle's
    ``pq20a30``: smallest angle 20°, largest area 30 px² on its 256² canvas; the area scales with
    the picture (:func:`~.pipeline.triangle_area`)."""
    max_triangle_area: float = 30.0
    min_angle: float = 20.0
    margin_px: float = 2.0            # silhouette dilation so its edge lies inside triangles (§2.5)
    backend: str = "scipy"


@dataclass(frozen=True)
class MotionSettings:
    """Flipbook Bezier Trajectory (spec §1.4, §4 node 5): AniClipart animates 24 frames; the
    presets are ours (weight-free)."""
    frames: int = 24
    preset: str = "wave"
    amplitude: float = 0.06           # largest control-point offset, a fraction of the canvas
    loop: str = "loop"
    cycles: int = 1
    seed: int = 0


@dataclass(frozen=True)
class DeformSettings:
    """Flipbook Mesh Deform (spec §2.4): FlexiClip's Poisson system. The weight-free rig pins the
    keypoints (λ = 1000: within 0.1 px of the trajectory even for 70 px moves, spec §2.4 "λ=1e3 gives
    ≈hard handles"), so a preset's motion is what one sees; FlexiClip's own λ = 1 (soft: the `sway`
    preset's keypoints land ~7 px off a 23 px move) is :data:`FLEXICLIP_LAMBDA`, what the SDS path
    uses, and an option of the node."""
    method: str = "poisson_bilap"
    constraint_lambda: float = 1000.0


# FlexiClip's constraint weight, never overridden in the official code (F:poisson_system.py:103, spec §2.2.2).
FLEXICLIP_LAMBDA = 1.0


MESH = MeshSettings()
MOTION = MotionSettings()
DEFORM = DeformSettings()
# `python -m comfyui_flipbook demo` moves a little more than the node default
DEMO_MOTION = MotionSettings(amplitude=0.08)

# The model folders the SDS workflow loads (the Hugging Face repo names users clone; make-test-models
# writes tiny random ones under them).
T2V_MODEL = "text-to-video-ms-1.7b"          # models/diffusers/ (ModelScope T2V, spec §1.7; CC BY-NC weights)
XCLIP_MODEL = "xclip-base-patch32"            # models/xclip/ (microsoft/xclip-base-patch32, spec §3)
