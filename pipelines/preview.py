"""What was detected, drawn over the picture: mesh, bones, keypoints, Bezier paths."""
from __future__ import annotations

import numpy as np
import torch

from .coords import rescale_pixels
from .skeleton import Skeleton

_BONE = (30, 144, 255)
_MESH = (120, 120, 120)
_PATH = (255, 140, 0)


def _over_checker(image: torch.Tensor) -> np.ndarray:
    """RGBA over a light checkerboard (transparent areas stay visible), RGB as it is."""
    img = image.detach().float().cpu()
    if img.shape[-1] == 4:
        h, w = img.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 0.92, 0.82).astype(np.float32)
        a = img[..., 3:].numpy()
        rgb = img[..., :3].numpy() * a + board * (1 - a)
    else:
        rgb = img.numpy()
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def draw_preview(image: torch.Tensor, skeleton: Skeleton | None = None, *, mesh=None, trajectory=None,
                 labels: bool = True, point_radius: float | None = None) -> torch.Tensor:
    """image [H, W, C] -> IMAGE [1, H, W, 3] with the overlays drawn (PIL, anti-aliased lines). Overlays
    made on another canvas size are placed by :func:`.coords.rescale_pixels`."""
    from PIL import Image, ImageDraw

    base = Image.fromarray(_over_checker(image))
    h, w = base.height, base.width
    d = ImageDraw.Draw(base, "RGBA")
    scale = max(h, w) / 512
    r = point_radius or max(2.0, 5 * scale)
    lw = max(1, int(round(2 * scale)))
    if mesh is not None:
        v = rescale_pixels(mesh.vertices.detach().double().cpu(), mesh.canvas, (h, w)).numpy()
        f = mesh.faces.cpu().numpy()
        edges = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1), axis=0)
        for a, b in edges:
            d.line([tuple(v[a]), tuple(v[b])], fill=_MESH + (140,), width=1)
    if trajectory is not None:
        tr = rescale_pixels(trajectory.frames().double().cpu(), trajectory.skeleton.canvas, (h, w)).numpy()
        for k in range(tr.shape[1]):
            d.line([tuple(p) for p in tr[:, k]], fill=_PATH + (230,), width=lw)
    if skeleton is not None:
        p = rescale_pixels(skeleton.points.double().cpu(), skeleton.canvas, (h, w)).numpy()
        for a, b in skeleton.edges.tolist():
            d.line([tuple(p[a]), tuple(p[b])], fill=_BONE + (255,), width=lw * 2)
        for i, (x, y) in enumerate(p):
            col = (220, 20, 60) if i == skeleton.root else (255, 215, 0)
            d.ellipse([x - r, y - r, x + r, y + r], fill=col + (255,), outline=(0, 0, 0, 255))
            if labels:
                d.text((x + r + 1, y - r - 1), str(i), fill=(0, 0, 0, 255))
    out = torch.from_numpy(np.asarray(base, dtype=np.float32) / 255.0)
    return out[None]
