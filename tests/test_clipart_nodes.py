"""The clipart nodes as ComfyUI calls them: inside torch.inference_mode(), with IMAGE/MASK tensors."""
import json
import pathlib

import pytest
import torch

from comfyui_flipbook import NODE_CLASS_MAPPINGS as N
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.io import load_rgba

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets"


def run(name, **kw):
    cls = N[name]
    out = getattr(cls(), cls.FUNCTION)(**kw)
    return out["result"] if isinstance(out, dict) else out


@pytest.fixture(scope="module")
def character():
    """The shipped character at 256² as a ComfyUI IMAGE [1, H, W, 4] (RGBA keeps the alpha)."""
    img = load_rgba(str(ASSETS / "flipbook_character.png"))
    img = torch.nn.functional.interpolate(img.permute(2, 0, 1)[None], size=(256, 256), mode="area")
    return img.permute(0, 2, 3, 1).contiguous()


@pytest.fixture(scope="module")
def points():
    kp = json.loads((ASSETS / "flipbook_character.keypoints.json").read_text())
    return json.dumps({**kp, "points": [[(x + 0.5) / 2 - 0.5, (y + 0.5) / 2 - 0.5] for x, y in kp["points"]]})


def _chain(character, points, preset="wave", frames=6, method="poisson_bilap"):
    (sk,) = run("FlipbookKeypointsFromJSON", image=character, points_json=points, edges_json="", normalized=False, root=-1)
    (mesh,) = run("FlipbookMeshBuilder", image=character, skeleton=sk, max_triangle_area=60.0, min_angle=20.0,
                  margin_px=2.0, backend="scipy", invert_mask=True)
    (traj,) = run("FlipbookBezierTrajectory", skeleton=sk, frames=frames, preset=preset, amplitude=0.08,
                  loop="loop", cycles=1, seed=0)
    (anim,) = run("FlipbookMeshDeform", mesh=mesh, trajectory=traj, method=method, constraint_lambda=1.0)
    frames_, mask = run("FlipbookMeshRender", animation=anim, background="white", scale=1.0)
    return sk, mesh, traj, anim, frames_, mask


def test_full_chain_in_inference_mode(inference, character, points):
    sk, mesh, traj, anim, frames, mask = _chain(character, points)
    assert frames.shape == (6, 256, 256, 3) and mask.shape == (6, 256, 256)
    assert frames.min() >= 0 and frames.max() <= 1
    # first frame is the rest pose: the picture composited on white
    a = character[0, ..., 3:]
    expected = character[0, ..., :3] * a + (1 - a)
    assert (frames[0] - expected).abs().max() < 1e-5
    # later frames move, the character keeps roughly its area (no tearing, no vanishing)
    assert (frames[1] - frames[0]).abs().mean() > 1e-3
    area0, area3 = mask[0].sum(), mask[1].sum()
    assert abs(area3 - area0) / area0 < 0.1
    # metrics run on the result; rest-pose animation would be still
    text, mv, tc, gd, ds, ae = run("FlipbookAnimationMetrics", animation=anim)
    assert json.loads(text)["motion_vitality"] == pytest.approx(mv) and mv > 0 and ae > 0
    (prev,) = run("FlipbookPreviewKeypoints", image=character, labels=True, skeleton=sk, mesh=mesh, trajectory=traj)
    assert prev.shape == (1, 256, 256, 3) and (prev != character[..., :3]).any()


def test_still_preset_renders_the_input_everywhere(inference, character, points):
    *_, frames, mask = _chain(character, points, preset="still", frames=3)
    a = character[0, ..., 3:]
    expected = character[0, ..., :3] * a + (1 - a)
    assert (frames - expected).abs().max() < 1e-5
    assert torch.allclose(mask, character[..., 3].expand(3, -1, -1), atol=1e-5)


def test_load_image_convention_matches_rgba(inference, character, points):
    """ComfyUI's Load Image gives RGB (alpha dropped) and MASK = 1 - alpha: wired together they must
    render exactly like the RGBA picture, transparent areas as background (not black)."""
    rgb, load_mask = character[..., :3], 1.0 - character[..., 3]          # PIL convert("RGB") keeps straight colours
    (sk,) = run("FlipbookKeypointsFromJSON", image=rgb, points_json=points, edges_json="", normalized=False, root=-1)
    kw = dict(skeleton=sk, max_triangle_area=60.0, min_angle=20.0, margin_px=2.0, backend="scipy")
    (m_rgba,) = run("FlipbookMeshBuilder", image=character, invert_mask=True, **kw)
    (m_load,) = run("FlipbookMeshBuilder", image=rgb, mask=load_mask, invert_mask=True, **kw)
    (traj,) = run("FlipbookBezierTrajectory", skeleton=sk, frames=3, preset="sway", amplitude=0.05, loop="loop",
                  cycles=1, seed=0)
    outs = []
    for mesh in (m_rgba, m_load):
        (anim,) = run("FlipbookMeshDeform", mesh=mesh, trajectory=traj, method="poisson_bilap", constraint_lambda=1.0)
        outs.append(run("FlipbookMeshRender", animation=anim, background="white", scale=1.0))
    assert (outs[0][0] - outs[1][0]).abs().max() < 1e-4
    assert outs[1][0][:, 0, 0].min() > 0.99                               # the corner is white background
    (p_rgba,) = run("FlipbookPreviewKeypoints", image=character, labels=False, skeleton=sk)
    (p_load,) = run("FlipbookPreviewKeypoints", image=rgb, labels=False, skeleton=sk, mask=load_mask)
    assert torch.equal(p_rgba, p_load)                                     # checkerboard, not black
    (a,) = run("FlipbookAutoKeypoints", image=character, max_keypoints=12, min_branch=0.08, invert_mask=True)
    (b,) = run("FlipbookAutoKeypoints", image=rgb, max_keypoints=12, min_branch=0.08, invert_mask=True, mask=load_mask)
    assert torch.allclose(a.points, b.points)


def test_auto_keypoints_node_and_pose_node(inference, character):
    (sk,) = run("FlipbookAutoKeypoints", image=character, max_keypoints=12, min_branch=0.08, invert_mask=True)
    assert 4 <= sk.num_points <= 12 and sk.canvas == (256, 256)
    pose = [{"people": [{"pose_keypoints_2d": sum([[0.3 + 0.02 * i, 0.2 + 0.03 * i + 0.01 * t, 1.0] for i in range(18)], [])}],
             "canvas_width": 256, "canvas_height": 256} for t in range(4)]
    sk2, tracks = run("FlipbookKeypointsFromPose", pose_keypoint=pose, person=0, frame=1, merge_face=True,
                      min_confidence=0.1)
    assert tracks.frames().shape == (4, sk2.num_points, 2)
    assert torch.equal(tracks.frames()[1], sk2.points)


def test_nodes_reject_bad_inputs(inference, character, points):
    with pytest.raises(FlipbookInputError, match="image"):
        run("FlipbookKeypointsFromJSON", image=torch.rand(1, 64, 64), points_json=points, edges_json="",
            normalized=False, root=-1)
    with pytest.raises(FlipbookInputError, match="keypoints|points_json"):
        run("FlipbookKeypointsFromJSON", image=character, points_json="[[10, 10], [300, 10]]", edges_json="",
            normalized=False, root=-1)
    (sk,) = run("FlipbookKeypointsFromJSON", image=character, points_json=points, edges_json="", normalized=False,
                root=-1)
    with pytest.raises(FlipbookInputError, match="mask"):      # all transparent: nothing to animate
        run("FlipbookMeshBuilder", image=character, skeleton=sk, max_triangle_area=60.0, min_angle=20.0,
            margin_px=2.0, backend="scipy", invert_mask=True, mask=torch.ones(1, 256, 256))
    with pytest.raises(FlipbookInputError):
        run("FlipbookMeshBuilder", image=torch.full((1, 256, 256, 3), float("nan")), skeleton=sk,
            max_triangle_area=60.0, min_angle=20.0, margin_px=2.0, backend="scipy", invert_mask=True)
    (mesh,) = run("FlipbookMeshBuilder", image=character, skeleton=sk, max_triangle_area=60.0, min_angle=20.0,
                  margin_px=2.0, backend="scipy", invert_mask=True)
    (other,) = run("FlipbookKeypointsFromJSON", image=character, points_json="[[10, 10], [100, 100], [50, 200]]",
                   edges_json="", normalized=False, root=-1)
    (traj,) = run("FlipbookBezierTrajectory", skeleton=other, frames=4, preset="sway", amplitude=0.05,
                  loop="loop", cycles=1, seed=0)
    with pytest.raises(FlipbookInputError, match="keypoints"):
        run("FlipbookMeshDeform", mesh=mesh, trajectory=traj, method="poisson_bilap", constraint_lambda=1.0)
    with pytest.raises(FlipbookInputError, match="mask"):
        run("FlipbookAutoKeypoints", image=character, max_keypoints=8, min_branch=0.08, invert_mask=True,
            mask=torch.ones(1, 32, 32))


def test_every_node_has_tooltips_category_and_description():
    for name, cls in N.items():
        assert cls.CATEGORY.startswith("Flipbook/"), name
        assert getattr(cls, "DESCRIPTION", ""), name
        it = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for inp, decl in it.get(section, {}).items():
                assert len(decl) > 1 and decl[1].get("tooltip"), f"{name}.{inp} has no tooltip"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), name


def test_composite_background_undoes_load_image_black(inference, character):
    rgb, load_mask = character[..., :3], 1.0 - character[..., 3]
    black = rgb * character[..., 3:]                                   # what a warp of Load Image's IMAGE shows
    (out,) = run("FlipbookCompositeBackground", frames=black.expand(3, -1, -1, -1), mask=load_mask,
                 background="white", invert_mask=True)
    a = character[..., 3:]
    assert (out - (rgb * a * a + (1 - a))).abs().max() < 1e-6 and out.shape[0] == 3
    assert out[:, 0, 0].min() == 1.0                                   # transparent corner is white
    with pytest.raises(FlipbookInputError, match="mask"):
        run("FlipbookCompositeBackground", frames=black, mask=torch.ones(2, 8, 8), background="white", invert_mask=True)
