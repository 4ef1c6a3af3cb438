import json
import pathlib

import pytest
import torch

from comfyui_flipbook.pipelines import bezier, keypoints, pose
from comfyui_flipbook.pipelines.io import load_rgba
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.skeleton import Skeleton


ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets"
DEMO_KEYPOINTS = ASSETS / "flipbook_character.keypoints.json"


def _sk():
    return keypoints.skeleton_from_json(open(DEMO_KEYPOINTS).read(), "", (512, 512))


# --- Bezier ----------------------------------------------------------------------------------

def test_bezier_endpoints_exact():
    g = torch.Generator().manual_seed(0)
    ctrl = torch.rand(7, 4, 2, generator=g, dtype=torch.float64) * 500
    p = bezier.bezier(ctrl, torch.tensor([0.0, 1.0]))
    assert torch.equal(p[0], ctrl[:, 0]) and torch.equal(p[1], ctrl[:, 3])


def test_once_trajectory_starts_and_ends_on_control_points():
    sk = _sk()
    tr = bezier.preset_trajectory(sk, "random", n_frames=9, amplitude=0.05, loop="once", seed=3,
                                  control_json=json.dumps({"relative": True, "control": [[[1, 2], [3, 4], [5, 6]]] +
                                                           [None] * (sk.num_points - 1)}))
    f = tr.frames()
    assert torch.equal(f[0], sk.points)                                   # c0 is the keypoint
    assert torch.allclose(f[-1], tr.control[:, 3])                        # u=1 lands on c3
    assert torch.allclose(tr.control[0, 3], sk.points[0] + torch.tensor([5.0, 6.0]))


@pytest.mark.parametrize("n,cycles", [(24, 1), (24, 2), (20, 1)])
def test_ping_pong_is_symmetric_and_turns_once_per_cycle(n, cycles):
    u = bezier.frame_times(n, "ping-pong", cycles)
    assert u[0] == 0 and u.max() == 1
    assert torch.allclose(u[1:], u[1:].flip(0))                           # u_t == u_{N-t}: seamless, mirrored
    turns = ((u[1:-1] > u[:-2]) & (u[1:-1] >= u[2:])).sum()
    assert turns == cycles


@pytest.mark.parametrize("loop_num,distinct", [(0, 24), (1, 12), (2, 6)])
def test_aniclipart_schedule(loop_num, distinct):
    """S = N // (2·loop_num) poses, forward then reversed, repeated (spec §1.4); loop_num 0 is 'once'."""
    if loop_num == 0:
        u = bezier.frame_times(24, "once")
        assert len(torch.unique(u)) == distinct
        return
    u = bezier.frame_times(24, "aniclipart", loop_num)
    poses = torch.linspace(0, 1, distinct, dtype=torch.float64)
    assert torch.equal(u[:distinct], poses) and torch.equal(u[distinct:2 * distinct], poses.flip(0))
    assert torch.equal(u, torch.cat([poses, poses.flip(0)]).repeat(loop_num))


def test_loop_mode_is_seamless_for_presets():
    sk = _sk()
    for preset in ("sway", "wave", "random"):
        tr = bezier.preset_trajectory(sk, preset, n_frames=24, amplitude=0.1)
        f = tr.frames()
        nxt = bezier.bezier(tr.control.double(), torch.tensor([1.0]))[0].float()   # the frame after the last
        assert torch.allclose(nxt, f[0], atol=1e-4), preset
        assert (f - f[0]).abs().max() > 5, preset                                   # and it moves


def test_presets_scale_with_depth_and_keep_root_still():
    sk = _sk()
    tr = bezier.preset_trajectory(sk, "sway", n_frames=12, amplitude=0.1)
    disp = (tr.frames() - sk.points).norm(dim=-1).max(0).values
    depth = sk.depths()
    assert disp[sk.root] == 0
    assert disp[depth == depth.max()].min() > disp[depth == 1].max()
    still = bezier.preset_trajectory(sk, "still", n_frames=5).frames()
    assert torch.equal(still, sk.points.expand(5, -1, -1))


def test_random_preset_is_seeded():
    sk = _sk()
    a = bezier.preset_trajectory(sk, "random", seed=1).frames()
    b = bezier.preset_trajectory(sk, "random", seed=1).frames()
    c = bezier.preset_trajectory(sk, "random", seed=2).frames()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bezier_bad_inputs():
    sk = _sk()
    with pytest.raises(FlipbookInputError, match="preset"):
        bezier.preset_trajectory(sk, "dance")
    with pytest.raises(FlipbookInputError, match="loop"):
        bezier.frame_times(10, "bounce")
    with pytest.raises(FlipbookInputError, match="control_json"):
        bezier.preset_trajectory(sk, control_json="[[1, 2]]")
    with pytest.raises(FlipbookInputError, match="frames"):
        bezier.frame_times(0)


# --- keypoints -------------------------------------------------------------------------------

def test_json_keypoints_object_and_lists():
    sk = _sk()
    assert sk.num_points == 11 and sk.root == 2 and sk.names[2] == "pelvis"
    sk2 = keypoints.skeleton_from_json("[[0.5, 0.5], [0.5, 0.9], [0.1, 0.5]]", "", (101, 201), normalized=True)
    assert torch.allclose(sk2.points[0], torch.tensor([100.0, 50.0]))
    assert sk2.edges.shape == (2, 2)                                       # spanning tree of 3 points
    assert sk2.root == 0                                                   # graph centre


@pytest.mark.parametrize("points,edges,match", [
    ("[[1, 2]]", "", "at least 2"),
    ("[[1, 2], [600, 3]]", "", "inside the 512x512"),
    ("[[1, 2], [NaN, 3]]", "", "JSON|finite"),
    ("[[1, 2], [3, 4]]", "[[0, 5]]", "edges_json"),
    ("{not json", "", "points_json"),
    ('{"pts": []}', "", "points"),
])
def test_json_keypoints_bad_inputs(points, edges, match):
    with pytest.raises(FlipbookInputError, match=match):
        keypoints.skeleton_from_json(points, edges, (512, 512))


def _openpose(frames=3, w=640, h=480):
    out = []
    for t in range(frames):
        j = []
        for i in range(18):
            x, y, c = 100 + 20 * i + 5 * t, 50 + 15 * i, 0.9
            if i == 17:
                c = 0.0                                                     # one ear not detected
            j += [x, y, c]
        out.append({"people": [{"pose_keypoints_2d": j}], "canvas_width": w, "canvas_height": h})
    return out


def _pose_skeletons(data, person=0, **kw):
    seq = pose.poses_from_openpose(data, person=person, threshold=0.1)
    track = pose.pose_skeleton(seq, merge_face=True, **kw)[1]
    return [pose.pose_skeleton(seq, frame=f, merge_face=True, **kw)[0] for f in range(track.frames)]


def test_pose_keypoints_merge_face_and_tracks():
    sks = _pose_skeletons(json.dumps(_openpose()))
    assert len(sks) == 3
    sk = sks[0]
    assert sk.names[0] == "head" and len(sk.names) == 14                  # 13 body joints + merged head
    assert sk.names[sk.root] == "neck"
    face = [0, 14, 15, 16]                                                 # ear 17 was not seen
    assert torch.allclose(sk.points[0], torch.tensor([[100 + 20 * i, 50 + 15 * i] for i in face]).float().mean(0))
    assert torch.allclose(sks[2].points - sks[0].points, torch.tensor([10.0, 0.0]).expand(14, 2))
    assert sk.canvas == (480, 640)
    # one connected skeleton
    assert len(sk.edges) == sk.num_points - 1


def test_pose_bad_inputs():
    with pytest.raises(FlipbookInputError, match="person"):
        _pose_skeletons(_openpose(), person=2)
    bad = _openpose(1)
    bad[0]["people"][0]["pose_keypoints_2d"] = [1, 2, 3]
    with pytest.raises(FlipbookInputError, match="18 body joints"):
        _pose_skeletons(bad)
    with pytest.raises(FlipbookInputError, match="OpenPose JSON"):
        _pose_skeletons("[1, 2]")


def test_auto_keypoints_on_the_character():
    image = load_rgba(str(ASSETS / "flipbook_character.png"))
    sk = keypoints.auto_keypoints(image[..., 3], max_keypoints=16)
    assert 8 <= sk.num_points <= 16
    assert len(sk.edges) == sk.num_points - 1                              # a tree
    alpha = image[..., 3]
    x, y = sk.points.round().long().unbind(1)
    assert (alpha[y, x] > 0.5).all()                                       # on the silhouette
    # hands and feet (the limb ends) are found within 25 px
    for end in [(140, 190), (372, 190), (206, 440), (306, 440)]:
        d = (sk.points - torch.tensor(end, dtype=torch.float32)).norm(dim=1).min()
        assert d < 25, end
    few = keypoints.auto_keypoints(image[..., 3], max_keypoints=5)
    assert 2 <= few.num_points <= 5


def test_auto_keypoints_bad_inputs():
    with pytest.raises(FlipbookInputError, match="empty"):
        keypoints.auto_keypoints(torch.zeros(1, 64, 64))
    with pytest.raises(FlipbookInputError, match="MASK"):
        keypoints.auto_keypoints(torch.zeros(2, 3, 4, 5))
    with pytest.raises(FlipbookInputError, match="max_keypoints"):
        keypoints.auto_keypoints(torch.ones(1, 64, 64), max_keypoints=1)


def test_skeleton_rejects_bad_edges_and_scales():
    with pytest.raises(FlipbookInputError, match="edges"):
        Skeleton(torch.zeros(3, 2), torch.tensor([[0, 3]]), (10, 10))
    sk = Skeleton(torch.tensor([[0.0, 0.0], [9.0, 19.0]]), torch.tensor([[0, 1]]), (20, 10))
    s2 = sk.scaled_to((40, 20))
    assert torch.allclose(s2.points, torch.tensor([[0.5, 0.5], [18.5, 38.5]]))
