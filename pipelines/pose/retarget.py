"""Retargeting a pose track to a character: Animate-X's EPI realign + rescale as a tool (spec
animatex.md §4.2, §4.1). Weight-free, CPU, shared with PoseAnimate."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..errors import fail
from .layout import FACE0, LHAND, NECK, NOSE, RHAND, PoseSequence

_LEFT_HAND = list(range(LHAND.start, LHAND.stop))
_RIGHT_HAND = list(range(RHAND.start, RHAND.stop))
_HANDS = _LEFT_HAND + _RIGHT_HAND

# Bones that retargeting rescales, grouped as the user scales them, parents before children.
PART_BONES = {
    "neck": [(1, 0)],
    "shoulders": [(1, 2), (1, 5)],
    "arms": [(2, 3), (3, 4), (5, 6), (6, 7)],
    "torso": [(1, 8), (1, 11)],
    "legs": [(8, 9), (9, 10), (11, 12), (12, 13), (10, 19), (13, 18)],
    "head": [(0, 14), (0, 15), (14, 16), (15, 17)],
}
PARTS = tuple(PART_BONES)
DROP_PARTS = {
    "none": [],
    "arms": [3, 4, 6, 7] + _HANDS,
    "hands": _HANDS,
    "arms+hands": [3, 4, 6, 7] + _HANDS,
    "legs": [9, 10, 12, 13, 18, 19],
    "feet": [18, 19],
    "left_arm": [6, 7] + _LEFT_HAND,
    "right_arm": [3, 4] + _RIGHT_HAND,
    "ears": [16, 17],
}


@dataclass(frozen=True)
class Rescale:
    """Per-part length factors on top of the realignment, and parts to drop (EPI rescale pool)."""
    head: float = 1.0
    neck: float = 1.0
    shoulders: float = 1.0
    arms: float = 1.0
    torso: float = 1.0
    legs: float = 1.0
    drop: tuple[str, ...] = ()


def random_rescale(seed: int, *, probability: float = 1.0, strength: float = 0.5,
                   drop_probability: float = 0.1) -> Rescale:
    """EPI-style random rescale (spec §4.1 proposal, an interpretation: the paper publishes no ranges).

    With probability ``probability`` (the paper's lambda): body parts s ~ U(1-strength, 1+strength),
    head s ~ U(1-0.8*strength, 1+1.6*strength) (0.6..1.8 at 0.5), and each of left arm, right arm,
    legs, hands dropped with ``drop_probability``. One draw per sequence."""
    rng = random.Random(seed)
    if rng.random() >= probability:
        return Rescale()
    s = {p: rng.uniform(1 - strength, 1 + strength) for p in ("neck", "shoulders", "arms", "torso", "legs")}
    s["head"] = rng.uniform(1 - 0.8 * strength, 1 + 1.6 * strength)
    drop = tuple(p for p in ("left_arm", "right_arm", "legs", "hands") if rng.random() < drop_probability)
    return Rescale(drop=drop, **s)


def _children(k: int) -> dict[int, list[int]]:
    ch: dict[int, list[int]] = {i: [] for i in range(k)}
    for bones in PART_BONES.values():
        for a, b in bones:
            ch[a].append(b)
    ch[7] += _LEFT_HAND                # left wrist -> left hand
    ch[4] += _RIGHT_HAND               # right wrist -> right hand
    ch[NOSE] += list(range(FACE0, k))  # nose -> face landmarks
    return ch


def _descendants(k: int) -> dict[int, list[int]]:
    ch = _children(k)
    out = {}
    for i in range(k):
        stack, seen = list(ch[i]), []
        while stack:
            j = stack.pop()
            seen.append(j)
            stack += ch[j]
        out[i] = seen
    return out


def _first_with(seq: PoseSequence, joints: list[int]) -> int | None:
    ok = seq.present[:, joints].all(1).nonzero()
    return int(ok[0]) if len(ok) else None


def retarget(driving: PoseSequence, reference: PoseSequence | None = None, rescale: Rescale = Rescale(), *,
             offset: tuple[float, float] = (0.0, 0.0)) -> PoseSequence:
    """Realign the driving poses to a reference pose's proportions and place, then rescale parts.

    1. global scale: x by the ratio of shoulder widths, y by the ratio of neck-to-hip heights;
    2. per bone, ratio = reference length / driving length, both from the first frame (after 1);
       each ratio times the user's part factor;
    3. every frame: for each bone parent -> child (parents first) shift the child and all its
       descendants by (child - parent) * (ratio - 1);
    4. translate so the first frame's neck sits on the reference neck (plus ``offset`` pixels).
    Without a reference, steps 1, 2 and 4 use ratio 1 and the driving canvas. Undetected points and
    zero-length bones leave their ratio at 1 (the guard UniAnimate lacks). Output lives on the
    reference canvas.
    """
    pts = driving.points.clone()
    conf = driving.conf.clone()
    k = pts.shape[1]
    canvas = driving.canvas
    ref_pts = ref_ok = None
    f0 = 0
    if reference is not None:
        if reference.points.shape[1] < FACE0:
            fail("reference_pose", "a pose sequence", f"{reference.points.shape[1]} points")
        r0 = _first_with(reference, [NECK]) if reference.frames else None
        if r0 is None:
            fail("reference_pose", "a detected neck (point 1) in the reference pose", "none")
        ref_pts, ref_ok = reference.points[r0], reference.present[r0]
        canvas = reference.canvas
        d0 = _first_with(driving, [NECK])
        if d0 is None:
            fail("poses", "a detected neck (point 1) in at least one driving frame", "none")
        f0 = d0
        # 1. global scale
        sx = sy = None
        if ref_ok[[2, 5]].all() and driving.present[f0, [2, 5]].all():
            dw = (driving.points[f0, 5, 0] - driving.points[f0, 2, 0]).abs()
            if dw > 1e-3:
                sx = float((ref_pts[5, 0] - ref_pts[2, 0]).abs() / dw)
        if ref_ok[[2, 5, 8, 11]].all() and driving.present[f0, [2, 5, 8, 11]].all():
            def height(p):
                return ((p[8, 1] + p[11, 1]) - (p[2, 1] + p[5, 1])).abs() / 2
            dh = height(driving.points[f0])
            if dh > 1e-3:
                sy = float(height(ref_pts) / dh)
        sx = sx if sx else (sy or 1.0)
        sy = sy if sy else sx
        if sx <= 1e-3 or sy <= 1e-3:
            sx = sy = 1.0
        pts = pts * torch.tensor([sx, sy])
    # 2. per-bone ratios from the first frame
    ratio: dict[tuple[int, int], float] = {}
    for part, bones in PART_BONES.items():
        factor = float(getattr(rescale, part))
        for a, b in bones:
            r = 1.0
            if ref_pts is not None and ref_ok[a] and ref_ok[b] and conf[f0, a] > 0 and conf[f0, b] > 0:
                ld = float((pts[f0, b] - pts[f0, a]).norm())
                lr = float((ref_pts[b] - ref_pts[a]).norm())
                if ld > 1e-3 and lr > 1e-3:
                    r = lr / ld
            ratio[(a, b)] = r * factor
    # 3. apply bone by bone, parents first
    desc = _descendants(k)
    present = conf > 0
    for bones in PART_BONES.values():
        for a, b in bones:
            r = ratio[(a, b)]
            if r == 1.0:
                continue
            ok = present[:, a] & present[:, b]
            delta = (pts[:, b] - pts[:, a]) * (r - 1.0) * ok[:, None]
            idx = [b] + desc[b]
            pts[:, idx] += delta[:, None]
    # face landmarks keep their size relative to the head
    if k > FACE0:
        head = [ratio[bone] for bone in PART_BONES["head"]]
        s = sum(head) / len(head)
        nose = pts[:, NOSE:NOSE + 1]
        pts[:, FACE0:] = nose + (pts[:, FACE0:] - nose) * s
    # 4. neck on the reference neck
    if ref_pts is not None:
        pts = pts + (ref_pts[NECK] - pts[f0, NECK])
    pts = pts + torch.tensor(offset, dtype=torch.float32)
    for part in rescale.drop:
        if part not in DROP_PARTS:
            fail("drop", f"one of {sorted(DROP_PARTS)}", repr(part))
        conf[:, DROP_PARTS[part]] = 0.0
    return PoseSequence(pts, conf, canvas)


def bone_lengths(seq: PoseSequence, frame: int = 0) -> dict[tuple[int, int], float]:
    """Lengths of the retargeted bones that are present in a frame."""
    out = {}
    for bones in PART_BONES.values():
        for a, b in bones:
            if seq.present[frame, a] and seq.present[frame, b]:
                out[(a, b)] = float((seq.points[frame, b] - seq.points[frame, a]).norm())
    return out
