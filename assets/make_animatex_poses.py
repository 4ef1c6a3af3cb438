"""Writes the Animate-X example poses (OpenPose / POSE_KEYPOINT JSON, pixel coordinates):

- assets/animatex_dance_poses.json: 8 frames of a synthetic dance, adult human proportions,
  512x768 canvas, with foot points and hands (the driving poses of workflows/animatex.json);
- assets/flipbook_character_pose.json: one frame, the pose of assets/flipbook_character.png
  (512x512), big head and short legs: the reference the dance is retargeted to.

Run: python assets/make_animatex_poses.py. The poses are ours (generated here).
"""
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def polar(p, ang_deg, length):
    a = math.radians(ang_deg)
    return (p[0] + length * math.cos(a), p[1] + length * math.sin(a))


def hand(wrist, ang_deg, scale=1.0):
    """21 points: wrist, then 5 fingers of 4 points fanned around the forearm direction."""
    pts = [wrist]
    for k, spread in enumerate((-40, -18, 0, 18, 36)):
        base = polar(wrist, ang_deg + spread, 14 * scale)
        for j in range(4):
            pts.append(polar(base, ang_deg + spread * 0.6, 10 * scale * j))
    return pts


def flat(pts, conf=1.0):
    out = []
    for x, y in pts:
        out += [round(x, 2), round(y, 2), conf]
    return out


def person(body, lhand, rhand, lfoot, rfoot):
    # foot_keypoints_2d: L big toe, L small toe, L heel, R big toe, R small toe, R heel (COCO-WholeBody)
    feet = [polar(lfoot, 0, 5), polar(lfoot, 180, 5), polar(lfoot, 270, 10),
            polar(rfoot, 180, 5), polar(rfoot, 0, 5), polar(rfoot, 270, 10)]
    return {"pose_keypoints_2d": flat(body), "foot_keypoints_2d": flat(feet),
            "hand_left_keypoints_2d": flat(lhand), "hand_right_keypoints_2d": flat(rhand),
            "face_keypoints_2d": None}


def dance_frame(f, n):
    ph = 2 * math.pi * f / n
    sway, bounce = 14 * math.sin(ph), 8 * abs(math.sin(ph))
    neck = (256 + sway, 210 + bounce)
    nose = (neck[0], neck[1] - 58)
    reye, leye = (nose[0] - 12, nose[1] - 10), (nose[0] + 12, nose[1] - 10)
    rear, lear = (nose[0] - 28, nose[1] - 4), (nose[0] + 28, nose[1] - 4)
    rsho, lsho = (neck[0] - 56, neck[1] + 5), (neck[0] + 56, neck[1] + 5)
    ra = 180 + 50 * math.sin(ph)                        # person's right arm = image left
    la = -50 * math.sin(ph + math.pi)                   # mirrored, half a beat later
    relb, lelb = polar(rsho, ra, 85), polar(lsho, la, 85)
    rwri, lwri = polar(relb, ra + 35 * math.sin(ph), 78), polar(lelb, la - 35 * math.sin(ph + math.pi), 78)
    rhip, lhip = (neck[0] - 30, neck[1] + 210), (neck[0] + 30, neck[1] + 210)
    rk = 95 + 8 * math.sin(ph)
    lk = 85 - 8 * math.sin(ph)
    rkne, lkne = polar(rhip, rk, 120), polar(lhip, lk, 120)
    rank = polar(rkne, rk - 12 * max(0.0, math.sin(ph)), 118)
    lank = polar(lkne, lk + 12 * max(0.0, -math.sin(ph)), 118)
    body = [nose, neck, rsho, relb, rwri, lsho, lelb, lwri, rhip, rkne, rank, lhip, lkne, lank, reye, leye, rear, lear]
    return person(body, hand(lwri, la - 35 * math.sin(ph + math.pi)), hand(rwri, ra + 35 * math.sin(ph)),
                  (lank[0] + 8, lank[1] + 16), (rank[0] - 8, rank[1] + 16))


def character():
    body = [(256, 128), (256, 172), (214, 208), (178, 212), (142, 190), (298, 208), (334, 212), (370, 190),
            (236, 300), (222, 372), (206, 440), (276, 300), (290, 372), (306, 440),
            (238, 112), (274, 112), (212, 114), (300, 114)]
    return person(body, hand((370, 190), -30, 1.4), hand((142, 190), 210, 1.4), (312, 452), (200, 452))


def main():
    n = 8
    dance = [{"people": [dance_frame(f, n)], "canvas_width": 512, "canvas_height": 768} for f in range(n)]
    with open(os.path.join(HERE, "animatex_dance_poses.json"), "w") as fh:
        json.dump(dance, fh)
    ref = [{"people": [character()], "canvas_width": 512, "canvas_height": 512}]
    with open(os.path.join(HERE, "flipbook_character_pose.json"), "w") as fh:
        json.dump(ref, fh)


if __name__ == "__main__":
    main()
