"""Weight-free animation metrics on vertex trajectories: FlexiClip-style, re-defined by us.

FlexiClip reports MV / TC / GD / DS / AE but no source defines them (spec flexiclip.md §3), so
these are OUR definitions, in px on the mesh canvas; they are not comparable with the paper's
numbers. All take the deformed vertices [T,V,2] of a mesh and need no model.
"""
from __future__ import annotations

import torch

from .deform import face_jacobians, mesh_edges
from .errors import check_finite, describe, fail
from .mesh import Mesh

METRIC_KEYS = ("motion_vitality", "temporal_consistency", "geometric_deviation",
               "deformation_smoothness", "animation_energy")


def closest_rotation(jac: torch.Tensor) -> torch.Tensor:
    """Rotation part of the polar decomposition of 2x2 matrices [...,2,2] (the closest rotation;
    the identity for a zero matrix)."""
    c = jac[..., 0, 0] + jac[..., 1, 1]
    s = jac[..., 1, 0] - jac[..., 0, 1]
    norm = torch.sqrt(c * c + s * s)
    ok = norm > 1e-12
    c = torch.where(ok, c / torch.where(ok, norm, 1.0), 1.0)
    s = torch.where(ok, s / torch.where(ok, norm, 1.0), 0.0)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def animation_metrics(mesh: Mesh, vertices: torch.Tensor) -> dict[str, float]:
    """Our FlexiClip-style metrics of an animation [T,V,2] of ``mesh`` (px on the mesh canvas).

    - motion_vitality (↑): mean over vertices of the path length Σ_t |V_{t+1} - V_t|.
    - temporal_consistency (↓): mean per-vertex second difference |V_{t+1} - 2V_t + V_{t-1}|
      (jerkiness; 0 for fewer than 3 frames).
    - geometric_deviation (↓): 100 x mean over frames of the area-weighted mean over faces of
      ``‖J_f - rot(J_f)‖_F`` (distance of each face Jacobian from its closest rotation).
    - deformation_smoothness (↓): 100 x (mean over frames and faces, area-weighted, of the change
      of the stretch ``S = rot(J)ᵀJ`` between consecutive frames + mean over frames and interior
      edges of ``‖J_f - J_g‖_F`` between the two adjacent faces). Rigid motions score 0.
    - animation_energy (↑): Σ_t Σ_v |V_{t+1} - V_t|² (kinetic energy, px²; grows with the number
      of vertices, compare it between runs on the same mesh).
    """
    if not isinstance(mesh, Mesh):
        fail("mesh", "a FLIPBOOK_MESH (Mesh)", describe(mesh))
    if not isinstance(vertices, torch.Tensor) or vertices.dim() != 3 or \
            tuple(vertices.shape[1:]) != (mesh.num_vertices, 2) or vertices.shape[0] == 0:
        fail("vertices", f"a tensor [frames, {mesh.num_vertices}, 2]", describe(vertices))
    check_finite("vertices", vertices)
    v = vertices.detach().cpu().to(torch.float64)
    step = v[1:] - v[:-1]
    motion = step.norm(dim=-1).sum(0).mean() if len(step) else v.new_zeros(())
    energy = (step ** 2).sum()
    accel = v[2:] - 2 * v[1:-1] + v[:-2]
    jerk = accel.norm(dim=-1).mean() if len(accel) else v.new_zeros(())
    jac = face_jacobians(mesh, v)                               # [T,F,2,2]
    rot = closest_rotation(jac)
    weight = mesh.areas().abs() / mesh.areas().abs().sum()
    deviation = ((jac - rot).flatten(-2).norm(dim=-1) * weight).sum(-1).mean()
    stretch = rot.transpose(-1, -2) @ jac
    temporal = ((stretch[1:] - stretch[:-1]).flatten(-2).norm(dim=-1) * weight).sum(-1).mean() \
        if len(stretch) > 1 else v.new_zeros(())
    _, _, _, _, face_l, face_r = mesh.cached("mesh_edges", lambda: mesh_edges(mesh.faces.numpy()))
    inner = face_r >= 0
    fl, fr = torch.from_numpy(face_l[inner]), torch.from_numpy(face_r[inner])
    spatial = (jac[:, fl] - jac[:, fr]).flatten(-2).norm(dim=-1).mean() if len(fl) else v.new_zeros(())
    return {
        "motion_vitality": float(motion),
        "temporal_consistency": float(jerk),
        "geometric_deviation": float(100 * deviation),
        "deformation_smoothness": float(100 * (temporal + spatial)),
        "animation_energy": float(energy),
    }
