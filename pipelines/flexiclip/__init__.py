"""FlexiClip (ICML 2025) for clipart, weight-free: keypoints -> Bezier trajectories -> mesh
deformation -> rendering (spec flexiclip.md). User-facing names say "Clipart"."""
from .pipeline import (DEMO_IMAGE, DEMO_KEYPOINTS, Animation, animate_clipart, deform_animation, demo_inputs,
                       render_animation, run_demo, triangle_area)
from .settings import DEFORM, FLEXICLIP_LAMBDA, MESH, MOTION, DeformSettings, MeshSettings, MotionSettings

__all__ = ["DEFORM", "FLEXICLIP_LAMBDA", "DEMO_IMAGE", "DEMO_KEYPOINTS", "MESH", "MOTION", "Animation", "DeformSettings",
           "MeshSettings", "MotionSettings", "animate_clipart", "deform_animation", "demo_inputs",
           "render_animation", "run_demo", "triangle_area"]
