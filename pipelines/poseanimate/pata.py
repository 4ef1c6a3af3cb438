"""PATA: Pose Alignment Transition (PA:41, 43, 204; spec §2.5). The paper gives no algorithm, so all of
this is our interpretation *(inf)*, on the pack's OpenPose layout (:class:`..pose.PoseSequence`):

1. scale s = d_src / d_tgt with d the neck -> mid-hip distance (fallback: the height of the bounding
   box of the body joints present);
2. translation puts the target's neck on the source's neck (fallback: the bounding boxes'
   bottom centres);
3. ``sequence``: one similarity from the first driving frame for all frames (the driving motion's
   travel is kept); ``per_frame``: one per frame;
4. t transition poses p^(k) = (1 - k/(t+1)) p_s + k/(t+1) p~_1, a joint missing at one end held from the
   other;
5. output [p_s, p^(1..t), p~_1..p~_M] on the source's canvas, M = total - 1 - t.
"""
from __future__ import annotations

import torch

from ..errors import fail
from ..pose.layout import BODY, NECK, PoseSequence
from .settings import ALIGN_MODES

R_HIP, L_HIP = 8, 11


def _anchor_and_size(points: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One frame's (anchor point, size, uses_neck): the neck and the neck -> mid-hip distance where
    those joints are present, else the body bounding box's bottom centre and height."""
    body, ok = points[:BODY], present[:BODY]
    if not ok.any():
        fail("poses", "at least one body joint present in every pose used for alignment", "an empty pose")
    hips = [j for j in (R_HIP, L_HIP) if ok[j]]
    box = body[ok]
    lo, hi = box.min(0).values, box.max(0).values
    bottom = torch.stack([(lo[0] + hi[0]) / 2, hi[1]])
    if ok[NECK] and hips:
        mid = body[hips].mean(0)
        d = (body[NECK] - mid).norm()
        if d > 1e-6:
            return body[NECK], d, True
    return bottom, (hi[1] - lo[1]).clamp(min=1e-6), False


def similarity(source: PoseSequence, target_points: torch.Tensor, target_present: torch.Tensor):
    """(scale, source anchor, target anchor) aligning one target frame to source frame 0."""
    a_s, d_s, neck_s = _anchor_and_size(source.points[0], source.present[0])
    a_t, d_t, neck_t = _anchor_and_size(target_points, target_present)
    if neck_s != neck_t:       # compare like with like: both bounding boxes when one lacks neck/hips
        a_s, d_s, _ = _anchor_and_size(source.points[0], source.present[0] & _no_neck(source.present[0]))
        a_t, d_t, _ = _anchor_and_size(target_points, target_present & _no_neck(target_present))
    return d_s / d_t, a_s, a_t


def _no_neck(present: torch.Tensor) -> torch.Tensor:
    """A presence mask that makes :func:`_anchor_and_size` take the bounding box (neck dropped only
    when another body joint remains)."""
    out = present.clone()
    if out[:BODY].sum() > 1:
        out[NECK] = False
    return out


def align_poses(source: PoseSequence, driving: PoseSequence, mode: str = "sequence") -> PoseSequence:
    """The driving poses moved and scaled onto the source pose (on the source's canvas)."""
    if mode not in ALIGN_MODES:
        fail("align_mode", f"one of {ALIGN_MODES}", repr(mode))
    if source.num_points != driving.num_points:
        n = min(source.num_points, driving.num_points)
        driving = PoseSequence(driving.points[:, :n], driving.conf[:, :n], driving.canvas)
    present = driving.present
    out = driving.points.clone()
    first = next((f for f in range(driving.frames) if present[f, :BODY].any()), None)
    if first is None:
        fail("sequence", "a driving pose sequence with at least one detected body joint", "no joints at all")
    s, a_s, a_t = similarity(source, driving.points[first], present[first])
    for f in range(driving.frames):
        if mode == "per_frame" and present[f, :BODY].any():
            s, a_s, a_t = similarity(source, driving.points[f], present[f])
        out[f] = (driving.points[f] - a_t) * s + a_s
    out = torch.where(present[..., None], out, torch.zeros_like(out))
    return PoseSequence(out, driving.conf.clone(), source.canvas)


def transition(start: PoseSequence, end: PoseSequence, t: int) -> PoseSequence:
    """t poses between frame 0 of ``start`` and frame 0 of ``end`` (endpoints excluded), per joint
    linear; a joint present at one end only is held at that end's position."""
    k = torch.arange(1, int(t) + 1, dtype=torch.float32)[:, None, None] / (int(t) + 1)
    p0, p1 = start.points[0], end.points[0]
    ok0, ok1 = start.present[0], end.present[0]
    p0h = torch.where(ok0[:, None], p0, p1)
    p1h = torch.where(ok1[:, None], p1, p0)
    pts = (1 - k) * p0h + k * p1h
    c0, c1 = start.conf[0], end.conf[0]
    conf = torch.where(ok0 & ok1, torch.minimum(c0, c1), torch.maximum(c0, c1)).expand(int(t), -1).clone()
    return PoseSequence(pts, conf, start.canvas)


def pata(source: PoseSequence, driving: PoseSequence, *, total_frames: int = 16, t: int = 4,
         align_mode: str = "sequence") -> PoseSequence:
    """[p_s, p^(1..t), p~_1..p~_M] with M = total_frames - 1 - t (``total_frames`` 0: every driving frame,
    M = its length). A driving sequence shorter than M holds its last pose."""
    if int(t) < 0:
        fail("t", "an integer >= 0", repr(t))
    if int(total_frames) < 0 or (int(total_frames) and int(total_frames) < int(t) + 2):
        fail("total_frames", f"0 (all driving frames) or at least t + 2 = {int(t) + 2}", repr(total_frames))
    src = PoseSequence(source.points[:1], source.conf[:1], source.canvas)
    aligned = align_poses(src, driving, align_mode)
    m = aligned.frames if int(total_frames) == 0 else int(total_frames) - 1 - int(t)
    idx = torch.arange(m).clamp(max=aligned.frames - 1)
    n = min(src.num_points, aligned.num_points)
    body = PoseSequence(aligned.points[idx, :n], aligned.conf[idx, :n], src.canvas)
    src = PoseSequence(src.points[:, :n], src.conf[:, :n], src.canvas)
    first = PoseSequence(body.points[:1], body.conf[:1], src.canvas)
    parts = [src] + ([transition(src, first, t)] if int(t) else []) + [body]
    return PoseSequence(torch.cat([p.points for p in parts]), torch.cat([p.conf for p in parts]), src.canvas)
