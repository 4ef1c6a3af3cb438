"""OpenPose/DWPose keypoints at the pack's edge: POSE_KEYPOINT (comfyui_controlnet_aux's JSON) <->
:class:`~.layout.PoseSequence`, and a pose sequence -> the pack's :class:`~..skeleton.Skeleton` and
:class:`~..skeleton.KeypointTrack` (:func:`pose_skeleton`, the one such converter).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from ..coords import clamp_to_canvas, fraction_to_pixel
from ..errors import fail
from ..skeleton import KeypointTrack, Skeleton, connect_components, graph_centre
from .layout import BODY, BODY_FEET, BODY_NAMES, FACE0, FACE_JOINTS, LFOOT, LHAND, LIMBS, NECK, RFOOT, RHAND, PoseSequence

JOINTS = ("detected", "body")
MISSING = ("hold", "neck")


def _flat(v, n: int, name: str, fi: int) -> np.ndarray:
    a = np.zeros((n, 3))
    if v:
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if arr.size % 3 or arr.size < 3:
            fail("pose_keypoint", f"{name} as a flat list of x, y, confidence triples in frame {fi}", f"{arr.size} numbers")
        arr = arr.reshape(-1, 3)[:n]
        a[:len(arr)] = arr
    return a


def openpose_frames(data, *, source: str = "pose_keypoint") -> list[dict]:
    """POSE_KEYPOINT as its list of frames ``{"people": [...], "canvas_width", "canvas_height"}``,
    from that list, one frame, or their JSON text. ``source`` names the input in error messages."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            fail(source, "OpenPose JSON text", f"invalid JSON ({exc})")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(f, dict) for f in data):
        fail(source, "OpenPose JSON: a list of frames {'people': [...], 'canvas_width', 'canvas_height'}",
             str(data)[:120])
    return data


def poses_from_openpose(data, *, person: int = 0, threshold: float = 0.3) -> PoseSequence:
    """POSE_KEYPOINT (:func:`openpose_frames`) -> PoseSequence. Points under ``threshold``
    confidence count as missing, as in Animate-X's process_data (0.3). Coordinates in 0..1 are
    OpenPose's normalised ones (:func:`..coords.fraction_to_pixel`). A frame where the person is
    absent is all-missing."""
    data = openpose_frames(data)
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


def pose_skeleton(poses: PoseSequence, *, frame: int = 0, joints: str = "detected", merge_face: bool = False,
                  missing: str = "hold", canvas: tuple[int, int] | None = None,
                  source: str = "poses") -> tuple[Skeleton, KeypointTrack]:
    """The body of a pose sequence as the pack's keypoints: the :class:`~..skeleton.Skeleton` of
    ``frame`` and the :class:`~..skeleton.KeypointTrack` [F, K, 2] of the same K points in every frame.

    joints: ``"detected"``: the OpenPose-18 joints detected in the first frame (Flipbook Keypoints
        from Pose); ``"body"``: all 20 body and foot points, detected or not.
    merge_face: nose, eyes and ears (those kept) become one ``head`` point at their mean
        (AniClipart's 17 -> 13 rule, spec flexiclip.md §1.2).
    missing: where a point goes in a frame where none of its joints is detected: ``"hold"`` its last
        detected position (the neck's before its first detection), ``"neck"`` the neck's position in
        that frame.

    Bones are the limbs of :data:`~.layout.LIMBS` between kept points, as sorted index pairs in
    sorted order; pieces that a dropped joint leaves apart are joined by their shortest connection.
    The root is the neck when kept, else the graph centre. Points are clamped to the pose canvas,
    then rescaled to ``canvas`` when given. Confidence: the mean of the point's detected joints,
    0 where it was filled in. ``source`` names the input in error messages.
    """
    if joints not in JOINTS:
        fail("joints", f"one of {JOINTS}", repr(joints))
    if missing not in MISSING:
        fail("missing", f"one of {MISSING}", repr(missing))
    if not 0 <= frame < poses.frames:
        fail("frame", f"an index below the {poses.frames} frames of {source}", f"{frame}")
    n = BODY if joints == "detected" else BODY_FEET
    xy = poses.points[:, :n].double().numpy()                      # [F, n, 2]
    conf = poses.conf[:, :n].double().numpy()
    seen = conf > 0
    keep = [j for j in range(n) if joints == "body" or seen[0, j]]
    names, groups = [], []
    if merge_face:
        face = [j for j in FACE_JOINTS if j in keep]
        if face:
            names.append("head")
            groups.append(face)
    for j in keep:
        if not (merge_face and j in FACE_JOINTS):
            names.append(BODY_NAMES[j])
            groups.append([j])
    if len(groups) < 2:
        fail(source, "at least 2 body joints detected in the first frame", f"{len(groups)}")
    index = {j: g for g, js in enumerate(groups) for j in js}
    bones = sorted({tuple(sorted((index[a], index[b]))) for a, b in LIMBS
                    if a in index and b in index and index[a] != index[b]})
    h, w = poses.canvas
    out = np.zeros((poses.frames, len(groups), 2))
    out_conf = np.zeros((poses.frames, len(groups)))
    last = [None] * len(groups)
    for fi in range(poses.frames):
        for g, js in enumerate(groups):
            det = [j for j in js if seen[fi, j]]
            if det:
                out[fi, g] = last[g] = xy[fi, det].mean(0)
                out_conf[fi, g] = conf[fi, det].mean()
            else:
                out[fi, g] = last[g] if missing == "hold" and last[g] is not None else xy[fi, NECK]
    points = torch.tensor(out, dtype=torch.float32)
    # joints orphaned by a dropped parent hang from the nearest kept joint (frame 0, before clamping)
    edges = connect_components(points[0].clone(), torch.tensor(bones, dtype=torch.long).reshape(-1, 2))
    clamp_to_canvas(points, (h, w))
    root = names.index("neck") if "neck" in names else graph_centre(len(groups), edges)
    track = KeypointTrack(points, torch.tensor(out_conf, dtype=torch.float32), (h, w))
    if canvas is not None:
        track = track.scaled_to(canvas)
    skeleton = Skeleton(track.points[frame], edges, track.canvas, root, names, track.conf[frame])
    return skeleton, track
