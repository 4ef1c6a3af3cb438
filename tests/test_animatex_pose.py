"""Pose sequences: OpenPose JSON round trip, retargeting invariants, EPI randomisation, rendering colours."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch

from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines import pose as P

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def dance():
    return P.poses_from_openpose((ASSETS / "animatex_dance_poses.json").read_text())


@pytest.fixture(scope="module")
def character():
    return P.poses_from_openpose((ASSETS / "flipbook_character_pose.json").read_text())


def test_openpose_round_trip_and_missing_points(dance):
    assert dance.frames == 8 and dance.canvas == (768, 512)
    assert dance.present[:, :20].all()                    # feet come from foot_keypoints_2d
    back = P.poses_from_openpose(P.poses_to_openpose(dance))
    assert torch.allclose(back.points[dance.present], dance.points[dance.present], atol=0.01)
    frames = P.poses_to_openpose(dance)
    frames[0]["people"][0]["pose_keypoints_2d"][3 * 4 + 2] = 0.2     # r_wrist below threshold 0.3
    seq = P.poses_from_openpose(frames)
    assert not seq.present[0, 4] and seq.present[1, 4]
    kps = seq.normalized_body()
    assert kps.shape == (8, 2, 18) and (kps[0, :, 4] == -1).all()
    assert torch.allclose(kps[1, 0, 1], dance.points[1, 1, 0] / 512)
    # normalised input coordinates are scaled to the canvas
    norm = json.loads(json.dumps(frames))
    for f in norm:
        k = f["people"][0]["pose_keypoints_2d"]
        for i in range(0, len(k), 3):
            k[i] /= 512
            k[i + 1] /= 768
        for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d", "foot_keypoints_2d"):
            f["people"][0][key] = None
    seq2 = P.poses_from_openpose(norm)
    assert torch.allclose(seq2.points[1, :18], dance.points[1, :18], atol=0.02)


def test_bad_pose_json_is_refused():
    with pytest.raises(FlipbookInputError, match="pose_keypoint"):
        P.poses_from_openpose("not json")
    with pytest.raises(FlipbookInputError, match="canvas"):
        P.poses_from_openpose([{"people": []}])
    with pytest.raises(FlipbookInputError, match="person"):
        P.poses_from_openpose([{"people": [], "canvas_width": 64, "canvas_height": 64}])
    with pytest.raises(FlipbookInputError, match="18 body joints"):
        P.poses_from_openpose([{"people": [{"pose_keypoints_2d": [1, 2, 1] * 10}], "canvas_width": 64, "canvas_height": 64}])
    with pytest.raises(FlipbookInputError, match="triples"):
        P.poses_from_openpose([{"people": [{"pose_keypoints_2d": [1, 2, 1] * 18, "hand_left_keypoints_2d": [1, 2]}],
                                "canvas_width": 64, "canvas_height": 64}])


def test_retarget_matches_reference_bones_and_neck(dance, character):
    out = P.retarget(dance, character)
    assert out.canvas == character.canvas
    want, got = P.bone_lengths(character), P.bone_lengths(out)
    assert set(got) == set(want) and len(want) == 19
    for bone, length in want.items():
        assert got[bone] == pytest.approx(length, rel=1e-4, abs=1e-3), bone
    assert torch.allclose(out.points[0, P.NECK], character.points[0, P.NECK], atol=1e-4)
    # the motion is kept: later frames differ from the first, and the neck moves as the dancer's does
    assert not torch.allclose(out.points[2, :18], out.points[0, :18], atol=1.0)
    d_neck = dance.points[:, P.NECK] - dance.points[0, P.NECK]
    o_neck = out.points[:, P.NECK] - out.points[0, P.NECK]
    sx = (character.points[0, 5, 0] - character.points[0, 2, 0]) / (dance.points[0, 5, 0] - dance.points[0, 2, 0])
    assert torch.allclose(o_neck[:, 0], d_neck[:, 0] * sx, atol=1e-3)
    # hands travel with their wrists
    assert torch.allclose(out.points[:, 20], out.points[:, 7], atol=1e-3)


def test_part_scales_and_drop(dance, character):
    base = P.bone_lengths(P.retarget(dance, character))
    big = P.retarget(dance, character, P.Rescale(legs=1.5, head=2.0, drop=("arms",)))
    got = P.bone_lengths(big)
    assert got[(8, 9)] == pytest.approx(1.5 * base[(8, 9)], rel=1e-4)
    assert got[(0, 14)] == pytest.approx(2.0 * base[(0, 14)], rel=1e-4)
    assert got[(1, 2)] == pytest.approx(base[(1, 2)], rel=1e-4)       # shoulders untouched
    assert not big.present[:, [3, 4, 6, 7]].any() and not big.present[:, 20:62].any()
    assert big.present[:, [2, 5]].all()
    with pytest.raises(FlipbookInputError, match="drop"):
        P.retarget(dance, character, P.Rescale(drop=("tail",)))


def test_retarget_guards_missing_and_degenerate(dance, character):
    drv = P.PoseSequence(dance.points.clone(), dance.conf.clone(), dance.canvas)
    drv.conf[:, 3] = 0                                    # elbow never detected
    drv.points[0, 9] = drv.points[0, 8]                   # zero-length thigh in frame 0
    out = P.retarget(drv, character)
    assert torch.isfinite(out.points).all()
    ref = P.PoseSequence(character.points.clone(), character.conf.clone(), character.canvas)
    ref.conf[:, 1] = 0
    with pytest.raises(FlipbookInputError, match="neck"):
        P.retarget(dance, ref)


def test_random_rescale_is_seeded():
    a, b, c = P.random_rescale(3), P.random_rescale(3), P.random_rescale(4)
    assert a == b and a != c
    assert P.random_rescale(3, probability=0.0) == P.Rescale()
    draws = [P.random_rescale(s) for s in range(200)]
    assert all(0.5 <= d.legs <= 1.5 and 0.6 <= d.head <= 1.8 for d in draws)
    assert 0 < sum(bool(d.drop) for d in draws) < 200


def test_render_colour_convention(dance):
    one = dance.select([0])
    one.conf[:, 2:] = 0                                   # only nose-neck limb (drawn with colour 12)
    cn = P.render_poses(one, 256, 384, colors="controlnet", hands=False)
    ax = P.render_poses(one, 256, 384, colors="animatex", hands=False)
    assert cn.shape == (1, 384, 256, 3) and 0 <= float(cn.min()) and float(cn.max()) <= 1
    assert torch.equal(ax, cn[..., [2, 1, 0]])
    # the neck joint dot is ControlNet colour 1 = (255, 85, 0): orange in ControlNet order
    x, y = (one.points[0, 1] * torch.tensor([0.5, 0.5])).round().long().tolist()
    assert cn[0, y, x].tolist() == pytest.approx([1.0, 85 / 255, 0.0], abs=1e-6)
    assert ax[0, y, x].tolist() == pytest.approx([0.0, 85 / 255, 1.0], abs=1e-6)
    # limbs are dimmed to 60 % (cv2 / DWPose draw_pose), joints are not
    mid = ((one.points[0, 0] + one.points[0, 1]) / 2 * 0.5).round().long().tolist()
    assert cn[0, mid[1], mid[0]].tolist() == pytest.approx([0.0, 0.0, int(255 * 0.6) / 255], abs=1e-6)


def test_skeleton_view(dance):
    sk, track = P.pose_skeleton(dance, joints="body", missing="neck")
    assert sk.num_points == 20 and sk.root == P.NECK and sk.names == P.BODY_NAMES
    assert torch.allclose(sk.points[5], dance.points[0, 5])
    assert track.points.shape == (dance.frames, 20, 2)
    # the bones are the layout's one limb table (as sorted pairs)
    assert {tuple(e) for e in sk.edges.tolist()} == {tuple(sorted(limb)) for limb in P.LIMBS}



def test_pose_skeleton_fills_missing_joints_at_the_neck_or_holds_them(dance):
    conf = dance.conf.clone()
    conf[2:, 4] = 0.0                                      # the right wrist is lost from frame 2 on
    seq = P.PoseSequence(dance.points, conf, dance.canvas)
    at_neck = P.pose_skeleton(seq, joints="body", missing="neck")[1]
    held = P.pose_skeleton(seq, joints="body", missing="hold")[1]
    assert torch.equal(at_neck.points[2:, 4], dance.points[2:, P.NECK])
    assert torch.equal(held.points[2:, 4], dance.points[1, 4].expand(dance.frames - 2, 2))
    assert (held.conf[2:, 4] == 0).all() and (held.conf[:2, 4] > 0).all()
    detected = P.pose_skeleton(seq)[0]                     # "detected": joints seen in the first frame
    assert detected.num_points == 18 and detected.names == P.BODY_NAMES[:18]


def test_the_one_limb_table_keeps_animatex_drawing_order_and_colours():
    """Animate-X's draw_pose colours limb i with colour i: the table's order is part of the release."""
    assert P.LIMBS == [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                       (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19)]
    assert P.COLORS[:3] == [(255, 0, 0), (255, 85, 0), (255, 170, 0)] and len(P.COLORS) == 20
    # the OpenPose-18 body is a tree of the first 17 limbs
    assert len({j for limb in P.LIMBS[:17] for j in limb}) == 18
