"""A synthetic clipart character (RGBA + skeleton) drawn with numpy: input for tests and benchmarks
that needs no picture file. Anti-aliased capsules and discs, one flat colour per body part."""
from __future__ import annotations

import numpy as np
import torch

from .coords import rescale_pixels
from .skeleton import Skeleton

# Joints on a 256 canvas (x, y): a figure with its arms held out, rooted at the pelvis.
_JOINTS = {
    "pelvis": (128, 150), "neck": (128, 84), "head": (128, 52),
    "l_shoulder": (104, 92), "l_elbow": (78, 128), "l_hand": (60, 164),
    "r_shoulder": (152, 92), "r_elbow": (180, 124), "r_hand": (204, 150),
    "l_hip": (114, 158), "l_knee": (104, 200), "l_foot": (98, 238),
    "r_hip": (142, 158), "r_knee": (154, 200), "r_foot": (162, 238),
}
_BONES = [("pelvis", "neck"), ("neck", "head"), ("neck", "l_shoulder"), ("l_shoulder", "l_elbow"),
          ("l_elbow", "l_hand"), ("neck", "r_shoulder"), ("r_shoulder", "r_elbow"),
          ("r_elbow", "r_hand"), ("pelvis", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_foot"),
          ("pelvis", "r_hip"), ("r_hip", "r_knee"), ("r_knee", "r_foot")]
# (bone or joint, radius on the 256 canvas, RGB): drawn in this order, later on top.
_PARTS = [
    (("l_hip", "l_knee"), 9, (0.20, 0.25, 0.55)), (("l_knee", "l_foot"), 8, (0.20, 0.25, 0.55)),
    (("r_hip", "r_knee"), 9, (0.20, 0.25, 0.55)), (("r_knee", "r_foot"), 8, (0.20, 0.25, 0.55)),
    (("pelvis", "neck"), 20, (0.85, 0.30, 0.25)),
    (("l_shoulder", "l_elbow"), 7, (0.85, 0.30, 0.25)), (("l_elbow", "l_hand"), 6, (0.95, 0.78, 0.62)),
    (("r_shoulder", "r_elbow"), 7, (0.85, 0.30, 0.25)), (("r_elbow", "r_hand"), 6, (0.95, 0.78, 0.62)),
    ("head", 22, (0.95, 0.78, 0.62)), ("l_hand", 7, (0.95, 0.78, 0.62)),
    ("r_hand", 7, (0.95, 0.78, 0.62)),
]


def _capsule_distance(xx, yy, a, b):
    ab = np.subtract(b, a, dtype=np.float64)
    t = ((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(xx - a[0] - t * ab[0], yy - a[1] - t * ab[1])


def synthetic_character(size: int = 256) -> tuple[torch.Tensor, Skeleton]:
    """A stick-figure clipart: (RGBA image [size,size,4] float32 0..1 with anti-aliased alpha,
    its 15-joint :class:`Skeleton` rooted at the pelvis)."""
    s = size / 256.0
    at = rescale_pixels(torch.tensor(list(_JOINTS.values()), dtype=torch.float64), (256, 256), (size, size))
    joints = dict(zip(_JOINTS, at.tolist()))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    rgba = np.zeros((size, size, 4))
    for part, radius, colour in _PARTS:
        a, b = (joints[part[0]], joints[part[1]]) if isinstance(part, tuple) else (joints[part],) * 2
        cover = np.clip(radius * s - _capsule_distance(xx, yy, a, b) + 0.5, 0.0, 1.0)
        # A dark outline one pixel inside the border, as clipart has.
        line = np.clip(1.5 - np.abs(radius * s - 1.0 - _capsule_distance(xx, yy, a, b)), 0, 1)
        col = np.asarray(colour) * (1 - 0.7 * line[..., None])
        rgba[..., :3] = col * cover[..., None] + rgba[..., :3] * (1 - cover[..., None])
        rgba[..., 3] = cover + rgba[..., 3] * (1 - cover)
    names = list(_JOINTS)
    # Straight alpha: un-premultiply where partly covered.
    a = rgba[..., 3:]
    rgba[..., :3] = np.where(a > 0, rgba[..., :3] / np.maximum(a, 1e-12), 0.0)
    image = torch.from_numpy(np.clip(rgba, 0, 1)).float()
    points = torch.tensor([joints[k] for k in names], dtype=torch.float32)
    edges = torch.tensor([[names.index(a), names.index(b)] for a, b in _BONES])
    return image, Skeleton(points, edges, (size, size), root=0, names=names)
