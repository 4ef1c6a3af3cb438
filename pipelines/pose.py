"""Pose sequences: OpenPose/DWPose JSON in and out, retargeting (Animate-X's EPI realign + rescale),
rendering in the Animate-X or ControlNet colour convention. Weight-free, CPU, shared with PoseAnimate.

A :class:`PoseSequence` is F frames of K keypoints in canvas pixels with a confidence per point
(0 = missing). Layout (spec §1.4, OpenPose-18 + DWPose feet + hands + optional face):

====== ================================================================================
0..17  nose, neck, R shoulder/elbow/wrist, L shoulder/elbow/wrist, R hip/knee/ankle,
       L hip/knee/ankle, R eye, L eye, R ear, L ear
18, 19 L foot, R foot (midpoint of big and small toe, as Animate-X's process_data adds)
20..40 left hand (21 points, OpenPose hand order), 41..61 right hand
62..   face landmarks (0, 68 or 70)
====== ================================================================================

ComfyUI type: ``FLIPBOOK_POSES``. Per-frame :class:`~.skeleton.Skeleton` views are available.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

from .coords import fraction_to_pixel, pixel_to_fraction
from .errors import check_finite, fail
from .skeleton import Skeleton

BODY = 18
LFOOT, RFOOT = 18, 19
LHAND = slice(20, 41)
RHAND = slice(41, 62)
FACE0 = 62
NECK, NOSE = 1, 0

BODY_NAMES = ["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
              "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
              "l_foot", "r_foot"]

# Drawing order and colours of the 19 limbs of Animate-X's body-and-foot skeleton (spec §1.4):
# the 17 OpenPose limbs, then ankle -> foot. Colours are ControlNet's (RGB).
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19)]
COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85), (170, 255, 255), (255, 255, 0)]
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]

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
    "arms": [3, 4, 6, 7] + list(range(20, 62)),
    "hands": list(range(20, 62)),
    "arms+hands": [3, 4, 6, 7] + list(range(20, 62)),
    "legs": [9, 10, 12, 13, 18, 19],
    "feet": [18, 19],
    "left_arm": [6, 7] + list(range(20, 41)),
    "right_arm": [3, 4] + list(range(41, 62)),
    "ears": [16, 17],
}


@dataclass
class PoseSequence:
    points: torch.Tensor            # [F, K, 2] float32 canvas pixels (x, y)
    conf: torch.Tensor              # [F, K] float32, 0 = missing
    canvas: tuple[int, int]         # (H, W)

    def __post_init__(self):
        self.points = torch.as_tensor(self.points, dtype=torch.float32)
        self.conf = torch.as_tensor(self.conf, dtype=torch.float32)
        if self.points.dim() != 3 or self.points.shape[-1] != 2 or self.points.shape[1] < FACE0:
            fail("poses", f"keypoints [frames, >= {FACE0}, 2]", f"{tuple(self.points.shape)}")
        if self.conf.shape != self.points.shape[:2]:
            fail("poses", f"one confidence per keypoint {tuple(self.points.shape[:2])}", f"{tuple(self.conf.shape)}")
        check_finite("poses", self.points)

    @property
    def frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def present(self) -> torch.Tensor:
        return self.conf > 0

    def select(self, index) -> "PoseSequence":
        return replace(self, points=self.points[index], conf=self.conf[index])

    def normalized_body(self) -> torch.Tensor:
        """(F, 2, 18): x's then y's in 0..1, -1 where missing: the IPI's keypoint input (spec §1.2)."""
        xy = pixel_to_fraction(self.points[:, :BODY], self.canvas)
        xy = torch.where(self.present[:, :BODY, None], xy, torch.full_like(xy, -1.0))
        return xy.transpose(1, 2).contiguous()

    def skeleton(self, frame: int = 0) -> Skeleton:
        """The body (20 points) of one frame as the pack's generic Skeleton; missing points sit on the neck."""
        pts = self.points[frame, :FACE0 - 42].clone()
        miss = ~self.present[frame, :20]
        pts[miss] = self.points[frame, NECK]
        h, w = self.canvas
        pts[:, 0].clamp_(0, w - 1)
        pts[:, 1].clamp_(0, h - 1)
        return Skeleton(pts, torch.tensor(LIMBS), self.canvas, root=NECK, names=list(BODY_NAMES))


# --- OpenPose / DWPose JSON (POSE_KEYPOINT of comfyui_controlnet_aux) -------------------------------

def _flat(v, n: int, name: str, fi: int) -> np.ndarray:
    a = np.zeros((n, 3))
    if v:
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if arr.size % 3 or arr.size < 3:
            fail("pose_keypoint", f"{name} as a flat list of x, y, confidence triples in frame {fi}", f"{arr.size} numbers")
        arr = arr.reshape(-1, 3)[:n]
        a[:len(arr)] = arr
    return a


def poses_from_openpose(data, *, person: int = 0, threshold: float = 0.3) -> PoseSequence:
    """POSE_KEYPOINT (a list of frames ``{"people": [...], "canvas_width", "canvas_height"}``, or
    its JSON text) -> PoseSequence. Points under ``threshold`` confidence count as missing, as in
    Animate-X's process_data (0.3). Coordinates in 0..1 are scaled to the canvas. A frame where
    the person is absent is all-missing."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            fail("pose_keypoint", "OpenPose JSON text", f"invalid JSON ({exc})")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(f, dict) for f in data):
        fail("pose_keypoint", "OpenPose JSON: a list of frames {'people': [...], 'canvas_width', 'canvas_height'}",
             str(data)[:120])
    h = int(data[0].get("canvas_height", 0) or 0)
    w = int(data[0].get("canvas_width", 0) or 0)
    if h < 2 or w < 2:
        fail("pose_keypoint", "canvas_width and canvas_height of at least 2 pixels in frame 0", f"{w}x{h}")
    n_face = 0
    for f in data:
        for p in f.get("people") or []:
            fk = p.get("face_keypoints_2d")
            if fk:
                n_face = max(n_face, len(fk) // 3)
    k = FACE0 + n_face
    pts = np.zeros((len(data), k, 3))
    seen_any = False
    for fi, f in enumerate(data):
        people = f.get("people") or []
        if person >= len(people):
            continue
        p = people[person]
        flat_body = p.get("pose_keypoints_2d") or []
        if len(flat_body) < BODY * 3:
            fail("pose_keypoint", f"18 body joints (54 numbers: x, y, confidence) in pose_keypoints_2d of frame {fi}; "
                 "undetected joints are written as 0, 0, 0", f"{len(flat_body)} numbers")
        body = _flat(flat_body, BODY, "pose_keypoints_2d", fi)
        pts[fi, :BODY] = body
        foot = p.get("foot_keypoints_2d")      # COCO-WholeBody: L big toe, L small toe, L heel, R ...
        if foot:
            ft = _flat(foot, 6, "foot_keypoints_2d", fi)
            for dst, (a, b) in ((LFOOT, (0, 1)), (RFOOT, (3, 4))):
                if min(ft[a, 2], ft[b, 2]) > 0:
                    pts[fi, dst] = [(ft[a, 0] + ft[b, 0]) / 2, (ft[a, 1] + ft[b, 1]) / 2, min(ft[a, 2], ft[b, 2])]
        pts[fi, LHAND] = _flat(p.get("hand_left_keypoints_2d"), 21, "hand_left_keypoints_2d", fi)
        pts[fi, RHAND] = _flat(p.get("hand_right_keypoints_2d"), 21, "hand_right_keypoints_2d", fi)
        if n_face:
            pts[fi, FACE0:] = _flat(p.get("face_keypoints_2d"), n_face, "face_keypoints_2d", fi)
        seen_any = True
    if not seen_any:
        fail("person", f"a person index present in at least one frame (frames have "
             f"{max(len(f.get('people') or []) for f in data)} people at most)", f"{person}")
    if not np.isfinite(pts).all():
        fail("pose_keypoint", "finite coordinates", "NaN/inf values")
    conf = pts[..., 2]
    conf = np.where((conf >= threshold) & (conf > 0), conf, 0.0)
    xy = torch.from_numpy(pts[..., :2])
    valid = conf > 0
    if valid.any() and np.abs(pts[..., :2][valid]).max() <= 1.0 + 1e-6:     # OpenPose's normalised output
        xy = fraction_to_pixel(xy, (h, w))
    return PoseSequence(xy.float(), torch.tensor(conf, dtype=torch.float32), (h, w))


def poses_to_openpose(seq: PoseSequence) -> list[dict]:
    """PoseSequence -> POSE_KEYPOINT frames (pixel coordinates; missing points are 0, 0, 0)."""
    h, w = seq.canvas
    out = []
    for f in range(seq.frames):
        tri = torch.cat([seq.points[f], seq.conf[f, :, None]], 1)
        tri[seq.conf[f] <= 0] = 0.0

        def flat(idx):
            return [round(float(v), 3) for v in tri[idx].reshape(-1)]

        lf, rf, heel = flat([LFOOT]), flat([RFOOT]), [0.0, 0.0, 0.0]
        person = {"pose_keypoints_2d": flat(slice(0, BODY)),
                  "foot_keypoints_2d": lf + lf + heel + rf + rf + heel,    # toes on the foot point
                  "hand_left_keypoints_2d": flat(LHAND), "hand_right_keypoints_2d": flat(RHAND),
                  "face_keypoints_2d": flat(slice(FACE0, None)) if seq.points.shape[1] > FACE0 else None}
        out.append({"people": [person], "canvas_width": w, "canvas_height": h})
    return out


# --- retargeting (spec §4.2) --------------------------------------------------------------------

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
    ch[7] += list(range(20, 41))       # left wrist -> left hand
    ch[4] += list(range(41, 62))       # right wrist -> right hand
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


# --- rendering (spec §1.4) ------------------------------------------------------------------------

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
                 face: bool = False, colors: str = "animatex", stick: float = 4.0, radius: float = 4.0) -> torch.Tensor:
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
    limbs = LIMBS if feet else LIMBS[:17]
    n_joints = 20 if feet else BODY
    frames = []
    for f in range(seq.frames):
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
