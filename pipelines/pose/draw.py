"""Drawing pose tracks as skeleton images, in Animate-X's or ControlNet's colours (spec animatex.md §1.4)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import fail
from ..progress import poll, report
from .layout import BODY, BODY_FEET, COLORS, FACE0, HAND_EDGES, LHAND, LIMBS, RHAND, PoseSequence


def _ellipse_polygon(p0, p1, half_width: float) -> list[tuple[float, float]]:
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    length = math.hypot(x1 - x0, y1 - y0) / 2
    ang = math.atan2(y1 - y0, x1 - x0)
    t = np.deg2rad(np.arange(0, 360, 1.0))
    ex, ey = length * np.cos(t), half_width * np.sin(t)
    xs = cx + ex * math.cos(ang) - ey * math.sin(ang)
    ys = cy + ex * math.sin(ang) + ey * math.cos(ang)
    return list(zip(xs.tolist(), ys.tolist()))


def _hsv(h: float) -> tuple[int, int, int]:
    import colorsys
    r, g, b = colorsys.hsv_to_rgb(h, 1.0, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_poses(seq: PoseSequence, width: int, height: int, *, hands: bool = True, feet: bool = True,
                 face: bool = False, colors: str = "animatex", stick: float = 4.0, radius: float = 4.0,
                 callback=None, check=None) -> torch.Tensor:
    """Skeleton images (F, height, width, 3) in 0..1, drawn like Animate-X's ``draw_pose``: limbs as
    ellipses, the canvas dimmed to 60 %, joint dots, HSV hand lines with dots, no face by default.

    ``colors="animatex"``: red and blue swapped, as the release's pose images are (finding 5: drawn
    in RGB, written with cv2 as BGR, read back as RGB); ``"controlnet"``: ControlNet's colours.
    The pose canvas is stretched to width x height (the release resizes without keeping aspect)."""
    from PIL import Image, ImageDraw

    if colors not in ("animatex", "controlnet"):
        fail("colors", "'animatex' or 'controlnet'", repr(colors))
    h0, w0 = seq.canvas
    sx, sy = width / w0, height / h0
    limbs = LIMBS if feet else LIMBS[:BODY - 1]          # the 17 OpenPose limbs, without ankle -> foot
    n_joints = BODY_FEET if feet else BODY
    frames = []
    for f in range(seq.frames):
        poll(check)
        if f:
            report(callback, f, seq.frames)
        p = (seq.points[f] * torch.tensor([sx, sy])).tolist()
        ok = seq.present[f].tolist()
        img = Image.new("RGB", (width, height))
        d = ImageDraw.Draw(img)
        for i, (a, b) in enumerate(limbs):
            if ok[a] and ok[b]:
                d.polygon(_ellipse_polygon(p[a], p[b], stick), fill=COLORS[i])
        img = Image.fromarray((np.asarray(img, dtype=np.float32) * 0.6).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for i in range(n_joints):
            if ok[i]:
                x, y = p[i]
                d.ellipse([x - radius, y - radius, x + radius, y + radius], fill=COLORS[i])
        if hands:
            for sl in (LHAND, RHAND):
                idx = list(range(sl.start, sl.stop))
                for ie, (a, b) in enumerate(HAND_EDGES):
                    if ok[idx[a]] and ok[idx[b]]:
                        d.line([tuple(p[idx[a]]), tuple(p[idx[b]])], fill=_hsv(ie / len(HAND_EDGES)), width=2)
                for i in idx:
                    if ok[i]:
                        x, y = p[i]
                        d.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(0, 0, 255))
        if face:
            for i in range(FACE0, len(p)):
                if ok[i]:
                    x, y = p[i]
                    d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 255, 255))
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        if colors == "animatex":
            arr = arr[..., [2, 1, 0]]
        frames.append(arr)
    return torch.stack(frames)
